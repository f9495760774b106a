"""How the host agent gets to the host: its source as one JSON line, run by a constant program.

The only command line sent over SSH is `cd / && exec PYTHON -I -S -u -c BOOTSTRAP MARKER`
(PYTHON validated and quoted, BOOTSTRAP a constant, MARKER random). The agent's files travel
as data: the agent package and the pure spec package, as the tree `kvmnet_agent/{agent,spec}/...`
that the host writes, every path checked first, into a private directory named by their hash
under /run/kvmnet/agent-code (see hostboot.py).

The controller first sends only that hash, `{"code": DIGEST}`. A host that already holds the
code starts the agent at once; one that does not answers `{"need": DIGEST}`, and the files
follow. The files (240 kB) thus cross the network once per version, not once per session.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
from pathlib import Path

from .settings import HostSettings

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # kvmnet_provider/
SHIPPED = ("agent", "spec")  # subpackages the agent needs; nothing else goes to the host
TOP = "kvmnet_agent"  # the package name they get on the host

# Runs on the host as `python -I -S -u -c BOOTSTRAP MARKER` from `/`: a constant and a random
# marker, never built from user input. See hostboot.py.
BOOTSTRAP = (Path(__file__).resolve().parent / "hostboot.py").read_text()


def agent_sources() -> dict[str, str]:
    """{path under the host's code directory: source} of every file the agent needs."""
    files = {f"{TOP}/__init__.py": ""}
    for sub in SHIPPED:
        for path in sorted((PACKAGE_DIR / sub).rglob("*.py")):
            files[f"{TOP}/{path.relative_to(PACKAGE_DIR).as_posix()}"] = path.read_text()
    return files


def code_digest(files: dict[str, str]) -> str:
    """The name of the files' directory on the host: hostboot.install computes the same."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:32]


@functools.cache
def agent_bundle() -> tuple[str, str]:
    """(digest, JSON line) of the agent's files, read and encoded once per process: every
    session of the process ships the same code."""
    files = agent_sources()
    return code_digest(files), json.dumps(files)


def agent_command(settings: HostSettings, marker: str) -> str:
    """The one command line sent over SSH: the host's Python running BOOTSTRAP from `/`;
    `marker` (see framing.py) is printed before the agent's hello."""
    python = (
        f"{shlex.quote(settings.python)} -I -S -u -c {shlex.quote(BOOTSTRAP)} {shlex.quote(marker)}"
    )
    return f"cd / && exec sudo -n -- {python}" if settings.sudo else f"cd / && exec {python}"
