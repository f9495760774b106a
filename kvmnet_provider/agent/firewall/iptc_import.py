"""Importing python-iptables without its start-up subprocesses.

On import, python-iptables looks up each C library with ctypes.util.find_library. On Linux
that runs `ldconfig -p` per name and, for a name ld's cache lacks (python-iptables looks its
own wrapper module up that way first), gcc and then ld. It also runs `ldconfig -N -v` to find
the xtables extension directory, and modprobe for modules the kernel already has: a row of
subprocesses before the first rule.

Here setuptools' distutils shim is kept out of the import, ld's cache is read once and
answers every lookup the way ctypes' first step does, the extension directory comes from
where libxtables lives (XTABLES_LIBDIR), and modprobe runs only for a module that is not
loaded yet. If python-iptables cannot load this way, it is loaded again its own way, so the
result is never worse than a plain `import iptc`.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import re
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

# ctypes' own mapping from machine to the ABI tag in `ldconfig -p` output.
ABI_TAGS = {
    "x86_64-64": "libc6,x86-64",
    "ppc64-64": "libc6,64bit",
    "sparc64-64": "libc6,64bit",
    "s390x-64": "libc6,64bit",
    "ia64-64": "libc6,IA-64",
}


class LdCache:
    """`ldconfig -p`, read once: soname and path by library name, for this process's ABI."""

    def __init__(self) -> None:
        bits = "-64" if struct.calcsize("l") == 8 else "-32"
        self.abi = ABI_TAGS.get(os.uname().machine + bits, "libc6")
        self._text: str | None = None
        self._first: dict[str, tuple[str, str]] | None = None

    def text(self) -> str:
        if self._text is None:
            try:
                self._text = subprocess.run(
                    ["/sbin/ldconfig", "-p"],
                    stdin=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    env={"LC_ALL": "C", "LANG": "C"},
                    check=False,
                ).stdout.decode(errors="replace")
            except OSError:
                self._text = ""
        return self._text

    def _first_by_name(self) -> dict[str, tuple[str, str]]:
        """Each library's first (soname, path) of this ABI, by the name before its first dot:
        one pass over the cache instead of one regular expression per lookup (python-iptables
        looks up about fifteen names)."""
        if self._first is None:
            self._first = {}
            line = re.compile(r"\s+(lib([^\s.]+)\.[^\s]+)\s+\(([^)]*)\)\s+=>\s+(\S+)")
            for found in line.finditer(self.text()):
                soname, name, tags, path = found.groups()
                if tags.startswith(self.abi):
                    self._first.setdefault(name, (soname, path))
        return self._first

    def lookup(self, name: str) -> tuple[str, str] | None:
        if "." not in name and name in self._first_by_name():
            return self._first_by_name()[name]
        lib, abi = re.escape(name), re.escape(self.abi)
        pattern = rf"\s+(lib{lib}\.[^\s]+)\s+\({abi}[^)]*\)\s+=>\s+(\S+)"
        found = re.search(pattern, self.text())
        return (found.group(1), found.group(2)) if found else None

    def find_library(self, name: str) -> str | None:
        found = self.lookup(name)
        return found[0] if found else None


def _extension_dir(cache: LdCache) -> str | None:
    found = cache.lookup("xtables")
    if found is None:
        return None
    candidate = os.path.join(os.path.dirname(found[1]), "xtables")
    return candidate if os.path.isdir(candidate) else None


def _load_util_module() -> Any:
    """iptc.util on its own, before the package runs, so that its modprobe can be skipped."""
    spec = importlib.util.find_spec("iptc")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "util.py")
    util_spec = importlib.util.spec_from_file_location("iptc.util", path)
    if util_spec is None or util_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(util_spec)
    sys.modules["iptc.util"] = module
    util_spec.loader.exec_module(module)
    return module


def _skip_loaded_modules(original: Callable[..., Any]) -> Callable[..., Any]:
    def load_kernel(name: str, exc_if_failed: bool = False) -> Any:
        if os.path.exists(f"/proc/net/{name}_names") or os.path.isdir(f"/sys/module/{name}"):
            return None  # already in the kernel: modprobe would only confirm it
        return original(name, exc_if_failed)

    return load_kernel


def _forget_iptc() -> None:
    for name in [n for n in sys.modules if n == "iptc" or n.startswith("iptc.")]:
        del sys.modules[name]


def import_iptc() -> ModuleType:
    """The iptc module, imported quickly when possible and plainly otherwise."""
    if "iptc" in sys.modules:
        return sys.modules["iptc"]
    # python-iptables imports distutils, which setuptools' shim (a .pth hook) turns into an
    # import of all of setuptools, for nothing: the standard library's is enough.
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "_distutils_hack"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # distutils, on Python 3.11
        return _import_iptc()


def _import_iptc() -> ModuleType:
    cache = LdCache()
    original_find = ctypes.util.find_library
    added_libdir = False
    try:
        if "XTABLES_LIBDIR" not in os.environ:
            libdir = _extension_dir(cache)
            if libdir:
                os.environ["XTABLES_LIBDIR"] = libdir
                added_libdir = True
        ctypes.util.find_library = cache.find_library
        util = _load_util_module()
        if util is not None:
            util.load_kernel = _skip_loaded_modules(util.load_kernel)
        import iptc  # type: ignore[import-untyped]

        return iptc
    except Exception:
        _forget_iptc()
        if added_libdir:
            del os.environ["XTABLES_LIBDIR"]
    finally:
        ctypes.util.find_library = original_find
    import iptc

    return iptc
