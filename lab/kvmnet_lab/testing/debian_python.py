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
    """Path of a Python that runs the system Python with the Debian packages: a venv made by
    hand (the agent runs with -I, which ignores PYTHONPATH) whose site-packages links them."""
    root = CACHE / "root"
    if not all((root / SITE / name).is_dir() for name in ("pyroute2", "iptc", "nftables")):
        shutil.rmtree(root, ignore_errors=True)  # unpacked before a package was added
        _unpack(root)
    venv = wrapper_dir / "debian-venv"
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    site = venv / "lib" / f"python{version}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (venv / "bin").mkdir(exist_ok=True)
    (venv / "pyvenv.cfg").write_text(f"home = {Path(SYSTEM_PYTHON).parent}\n")
    for entry in (root / SITE).iterdir():
        if not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    python = venv / "bin" / "python3"
    if not python.exists():
        python.symlink_to(SYSTEM_PYTHON)
    return str(python)
