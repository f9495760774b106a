"""The users kvmnet made for a lab host's guests, removed with the host's namespace."""

from __future__ import annotations

import pwd
import time

from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.agent.guests import users


def remove_namespace_users(label: str, wait: float = 10.0) -> None:
    """Remove the users of namespace `label` ("netns-<inode>"). Their QEMUs were just killed,
    and a user some process still has (not yet reaped by init) is skipped: try again until
    none is left, for a bounded time (a QEMU that outlived its namespace keeps its user)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            users.remove_namespace_users(label)
        except AgentError:
            pass
        if not _left(label) or time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def _left(label: str) -> bool:
    return any(
        e.pw_gecos.split()[:2] == ["kvmnet", "guest"] and label in e.pw_gecos.split()
        for e in pwd.getpwall()
    )
