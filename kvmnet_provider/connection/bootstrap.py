"""How the host agent gets to the host: its source as one JSON line, run by a constant program.

The only command line sent over SSH is `exec PYTHON -S -u -c BOOTSTRAP` (PYTHON validated
and quoted, BOOTSTRAP a constant). The agent's files travel as data: the agent package and
the pure spec package, as the tree `kvmnet_agent/{agent,spec}/...` that the host writes into
a private temporary directory, checking every path first.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .settings import HostSettings

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # kvmnet_provider/
SHIPPED = ("agent", "spec")  # subpackages the agent needs; nothing else goes to the host
TOP = "kvmnet_agent"  # the package name they get on the host

# Runs on the host as `python -S -u -c BOOTSTRAP`: a constant, never built from user input.
# It receives the agent's files as one JSON object {relative path: source} on stdin, then
# serves requests. -S skips site's .pth processing (a venv's can cost more than the agent's
# own start); the site directories are put on the path directly, and site runs in full only
# when that is not enough to find what the agent needs.
BOOTSTRAP = r"""
import sys, site
sys.path.extend(p for p in getattr(site, "getsitepackages", list)() if p not in sys.path)
import importlib.util
if not all(importlib.util.find_spec(m) for m in ("pyroute2", "iptc")):
    site.main()
import json, os, re, tempfile, shutil, atexit
files = json.loads(sys.stdin.readline())
root = tempfile.mkdtemp(prefix="kvmnet-agent-")
atexit.register(shutil.rmtree, root, True)
part = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
for path, text in files.items():
    parts = path.split("/")
    if (parts[0] != "kvmnet_agent" or len(parts) > 4 or not parts[-1].endswith(".py")
            or not all(part.fullmatch(p) for p in parts[:-1] + [parts[-1][:-3]])):
        raise SystemExit("bad agent file name")
    os.makedirs(os.path.join(root, *parts[:-1]), exist_ok=True)
    with open(os.path.join(root, *parts), "w") as f:
        f.write(text)
sys.path.insert(0, root)
from kvmnet_agent.agent import server
server.main()
"""


def agent_sources() -> dict[str, str]:
    """{path under the host's temporary directory: source} of every file the agent needs."""
    files = {f"{TOP}/__init__.py": ""}
    for sub in SHIPPED:
        for path in sorted((PACKAGE_DIR / sub).rglob("*.py")):
            files[f"{TOP}/{path.relative_to(PACKAGE_DIR).as_posix()}"] = path.read_text()
    return files


def agent_command(settings: HostSettings) -> str:
    """The one command line sent over SSH: the host's Python running BOOTSTRAP."""
    python = f"{shlex.quote(settings.python)} -S -u -c {shlex.quote(BOOTSTRAP)}"
    return f"exec sudo -n -- {python}" if settings.sudo else f"exec {python}"
