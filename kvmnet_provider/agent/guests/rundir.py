"""A guest's run directory, ``<hoststate>/netns-<inode>/guests/<name>/``, and its records."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import hoststate, rundir
from ..errors import AgentError, held_fix
from . import taps
from .qmp import status

if TYPE_CHECKING:
    from ...spec.wire import GuestState


def guests_root() -> Path:
    return rundir.private_dir(hoststate.namespace_dir() / "guests")


@contextmanager
def locked(name: str) -> Iterator[Path]:
    """The guests directory, with guest `name` held under an exclusive lock (all agents and
    agent threads on this host). Per guest: one guest's slow stop holds up no other guest.
    The lock files live beside the run dirs, not among them: a guest may be named anything.
    A guest with no run dir keeps no lock file either: the holder removes it on the way out,
    and whoever waited on the removed file locks the path's new one instead."""
    root = guests_root()
    with rundir.name_lock(root.parent / "guest-locks", name, kept_while=root / name):
        yield root


def load_meta(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(rundir.read_text(run_dir / "guest.json") or "null")
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def save_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    rundir.replace_text(run_dir / "guest.json", json.dumps(meta, sort_keys=True, indent=1))


def remove_run_dir(run_dir: Path, meta: dict[str, Any] | None) -> None:
    for key in ("console_socket", "qmp_socket"):
        path = (meta or {}).get(key)
        if isinstance(path, str) and not path.startswith(str(run_dir) + "/"):
            p = Path(path)
            if p.is_socket():  # a socket we asked QEMU to create elsewhere
                p.unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def state(run_dir: Path, meta: dict[str, Any], pid: int) -> GuestState:
    return {
        "pid": pid,
        "status": status(meta["qmp_socket"]),
        "accelerator": meta["accelerator"],
        "accelerator_reason": meta["accelerator_reason"],
        "console_socket": meta["console_socket"],
        "console_log": meta["console_log"],
        "qmp_socket": meta["qmp_socket"],
        "macs": [n["mac"] for n in meta.get("nics") or []],
        "run_dir": str(run_dir),
        "argv_sha256": meta["argv_sha256"],
        "disk_path": meta.get("disk_path"),
        "seed_path": meta.get("seed_path"),
        "replaced_taps": taps.replaced(meta),
    }


def not_ours(run_dir: Path, meta: dict[str, Any] | None, owner: str | None = None) -> AgentError:
    """The refusal of another's guest; `owner` (the one asking to create it) adds the fix."""
    holder = f"kvmnet resource {meta['owner']}" if meta and meta.get("owner") else "unknown"
    fix = f": {held_fix(meta['owner'], owner)}" if owner and meta and meta.get("owner") else ""
    return AgentError(
        "conflict",
        f"guest {run_dir.name} exists on this host and belongs to {holder} ({run_dir}); "
        f"kvmnet will not touch it{fix}",
    )
