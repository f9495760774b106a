"""The `cidata` seed ISO (ISO9660 + Joliet + Rock Ridge), built in Python with pycdlib.

Deterministic: the same files give the same bytes (every date in the image is one fixed
instant, in UTC), so a seed's digest says whether a guest's seed changed.
"""

from __future__ import annotations

import io
import threading
import time as _time
from typing import Any

import pycdlib

VOLUME_ID = "cidata"
FIXED_TIME = 946684800.0  # 2000-01-01T00:00:00Z
# pycdlib's modules that date the image: each calls its module-level `time`.
_DATED_MODULES = ("pycdlib", "headervd", "dates", "utils", "inplaceeditor")
_lock = threading.Lock()


class _FixedClock:
    """`time` for pycdlib: now is FIXED_TIME and local time is UTC; the rest is time's."""

    @staticmethod
    def time() -> float:
        return FIXED_TIME

    @staticmethod
    def localtime(secs: float | None = None) -> _time.struct_time:
        return _time.gmtime(FIXED_TIME if secs is None else secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def _iso9660_name(name: str) -> str:
    """ISO9660 level-3 spelling of a seed file name: upper case, '-' -> '_', ';1'."""
    return "/" + name.upper().replace("-", "_") + ".;1"


def build_seed(files: dict[str, bytes]) -> bytes:
    """The ISO image holding `files` (names as cloud-init reads them: user-data, ...)."""
    with _lock:
        import importlib

        modules = [importlib.import_module(f"pycdlib.{m}") for m in _DATED_MODULES]
        saved = [m.time for m in modules]  # type: ignore[attr-defined]
        for m in modules:
            m.time = _FixedClock()  # type: ignore[attr-defined]
        try:
            iso = pycdlib.PyCdlib()
            iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID)
            for name in sorted(files):
                data = files[name]
                iso.add_fp(
                    io.BytesIO(data),
                    len(data),
                    _iso9660_name(name),
                    rr_name=name,
                    joliet_path="/" + name,
                )
            out = io.BytesIO()
            iso.write_fp(out)
            iso.close()
        finally:
            for m, t in zip(modules, saved, strict=True):
                m.time = t  # type: ignore[attr-defined]
    return out.getvalue()
