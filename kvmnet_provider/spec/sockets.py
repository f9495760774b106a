"""Where a guest's console and QMP sockets may be: only directly in the guest's run directory.

QEMU, as root, unlinks whatever is at a listening socket's path before it binds: a path such
as /run/dbus/system_bus_socket would replace another service's socket. The host agent checks
the exact directory (agent/guests/socket_rules.py); the provider cannot know the host's run
directory (`<run root>/netns-<inode>/guests/<name>/`), but checks its shape at preview.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

SOCKET_KEYS = ("console_socket", "qmp_socket")
# Names in a guest's run directory that are not for sockets.
RUN_DIR_FILES = (
    "",
    ".",
    "..",
    "guest.json",
    "guest.json.tmp",
    "qemu.pid",
    "qemu.log",
    "console.log",
)
NAMESPACE_DIR = re.compile(r"netns-[0-9]+")
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")  # a guest's name as given (not yet known: skip)


def outside_run_dir(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(property, reason) for each socket path set that cannot be in the guest's run dir."""
    failures = []
    name = spec.get("name")
    for key in SOCKET_KEYS:
        value = spec.get(key)
        if not isinstance(value, str) or not value.startswith("/"):
            continue  # unset (the default is in the run dir), or not known before `up`
        path = PurePosixPath(value)
        run_dir = path.parent
        if (
            (run_dir.name != name and PLAIN_NAME.fullmatch(str(name)))
            or run_dir.parent.name != "guests"
            or not NAMESPACE_DIR.fullmatch(run_dir.parent.parent.name)
            or path.name in RUN_DIR_FILES
        ):
            failures.append(
                (
                    key,
                    f"{value} is outside the guest's run directory; leave it unset (the default "
                    "is a socket there) or name a new file directly in it "
                    f"(<kvmnet run dir>/netns-<inode>/guests/{name}/<file>)",
                )
            )
    return failures
