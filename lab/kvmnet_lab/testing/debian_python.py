"""The system Python with Debian's own python3-pyroute2, python3-iptables and python3-nftables.

A host set up the way kvmnet's error message says (`apt-get install python3-pyroute2`) runs
the agent with these packages, which are older than the venv's (pyroute2 0.7 on bookworm).
They are downloaded with `apt-get download` and unpacked, not installed, so the machine's
own Python stays as it was; a small wrapper puts them on its path.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

PACKAGES = ("python3-pyroute2", "python3-iptables", "python3-nftables")
CACHE = Path("/var/cache/kvmnet/debian-agent-packages")
SYSTEM_PYTHON = "/usr/bin/python3"
SITE = "usr/lib/python3/dist-packages"


def _unpack(into: Path) -> None:
    """Download and unpack the packages into `into` (which must not exist yet)."""
    work = Path(tempfile.mkdtemp(prefix="kvmnet-debs-"))
    try:
        work.chmod(0o755)  # apt downloads as its sandbox user
        subprocess.run(
            ["apt-get", "download", "-q", *PACKAGES],
            cwd=work,
            check=True,
            capture_output=True,
            text=True,
        )
        staging = work / "root"
        names = []
        for deb in sorted(work.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
            names.append(deb.name)
        (staging / "VERSIONS").write_text("\n".join(names) + "\n")
        into.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(into)  # whole or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)


def debian_python(wrapper_dir: Path) -> str:
    """Path of an executable that runs the system Python with the Debian packages."""
    root = CACHE / "root"
    if not all((root / SITE / name).is_dir() for name in ("pyroute2", "iptc", "nftables")):
        shutil.rmtree(root, ignore_errors=True)  # unpacked before a package was added
        _unpack(root)
    wrapper = wrapper_dir / "python3-debian"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={root / SITE} exec {SYSTEM_PYTHON} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)

