"""Keep the agent's code directory (see connection/hostboot.py) from being cleared while a
process that came from it still runs: a shared flock on `<code dir>.lock`, held until exit."""

from __future__ import annotations

import fcntl
import os


def hold_code(code_root: str | None) -> int | None:
    """The open lock file descriptor (keep it), or None when there is nothing to hold."""
    if not code_root:
        return None
    try:
        fd = os.open(f"{code_root}.lock", os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # not a hostboot code directory (a test running the agent in place)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd
