"""kvmnet's run directory on the host (/run/kvmnet): private, and never through a symlink.

Another local user must not read kvmnet's books or steer what root writes: every directory
under it is made (or found, then tightened to) mode 0700, owned by the agent's user and
not a symlink; files in it are opened with O_NOFOLLOW.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import AgentError


def private_dir(path: Path) -> Path:
    """`path` as a directory of this user's, mode 0700 (its parents first, up to an existing
    one that is not under the run root's control, such as /run)."""
    if not path.parent.exists():
        private_dir(path.parent)
    info = own_directory(path)
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)
    return path


def own_directory(path: Path) -> os.stat_result:
    """`path` made (0700) or found as a directory of this user's, never through a symlink;
    its lstat."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise AgentError(
            "conflict", f"{path} is not a directory owned by uid {os.geteuid()} (a symlink?)"
        )
    return info


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


@contextmanager
def name_lock(locks: Path, name: str, kept_while: Path) -> Iterator[None]:
    """Hold `locks/name` exclusively (all agents and agent threads on this host). The lock
    file lives only as long as `kept_while` does: the holder removes it on the way out when
    that is gone, and whoever waited on the removed file locks the path's new one instead."""
    path = private_dir(locks) / name
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.lstat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # removed (or replaced) while this thread waited: lock the current one
    try:
        yield
    finally:
        try:
            if not kept_while.exists():
                path.unlink(missing_ok=True)  # still held: nobody has the file locked now
        finally:
            os.close(fd)
