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


def read_text(path: Path) -> str | None:
    """The file's text, or None if it is absent; a symlink in its place is an error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:
        return f.read()


def replace_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole (a 0600 temporary file renamed over it, never followed)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
