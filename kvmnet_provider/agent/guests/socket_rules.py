"""Where QEMU may create its console and QMP sockets: only in the guest's own run directory.

QEMU, as root, unlinks whatever is at a listening socket's path before it binds, and delete
removed a socket found there: a path such as /run/dbus/system_bus_socket would replace, then
delete, another service's socket. A socket path asked for elsewhere is refused.
"""

from __future__ import annotations

from pathlib import Path

from ...spec.sockets import RUN_DIR_FILES, SOCKET_KEYS
from ..errors import AgentError


def inside_run_dir(run_dir: Path, paths: dict[str, str]) -> None:
    for key in SOCKET_KEYS:
        path = Path(paths[key])
        if path.parent != run_dir or path.name in RUN_DIR_FILES:
            raise AgentError(
                "invalid",
                f"{key} {path} is outside the guest's run directory {run_dir}; leave it unset "
                "(the default is a socket in that directory) or name a file directly in it",
            )
