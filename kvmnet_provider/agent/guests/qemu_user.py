"""The user a guest's `run_as` names: it must exist on this host (unset, the guest gets a
user of its own: guests/users.py).

QEMU opens its disks, taps, sockets, logs and pidfile as root, then switches to the user
(-runas), so those stay root's and a compromised QEMU holds only what the user may touch.
"""

from __future__ import annotations

import pwd

from ..errors import AgentError


def check(user: str | None) -> None:
    if user is None:
        return
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise AgentError(
            "missing", f"run_as user {user} does not exist on this host; create it or unset run_as"
        ) from None
