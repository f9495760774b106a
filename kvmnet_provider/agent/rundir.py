"""kvmnet's run directory on the host (/run/kvmnet): private, and never through a symlink.

Another local user must not read kvmnet's books or steer what root writes: every directory
under it is made (or found, then tightened to) mode 0700, owned by the agent's user and
not a symlink; files in it are opened with O_NOFOLLOW.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import AgentError


def private_dir(path: Path) -> Path:
    """`path` as a directory of this user's, mode 0700 (its parents first, up to an existing
    one that is not under the run root's control, such as /run)."""
    if not path.parent.exists():
        private_dir(path.parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise AgentError(
            "conflict", f"{path} is not a directory owned by uid {os.geteuid()} (a symlink?)"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)
    return path


def nofollow(path: str, flags: int) -> int:
    """An `opener` for open(): refuses a symlink in place of the file."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
