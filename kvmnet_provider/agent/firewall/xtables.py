"""The xtables lock around python-iptables' table commits, and commits that stay done.

libiptc replaces a whole table at a commit: what another process changed between our refresh
and our commit is lost. iptables-legacy, iptables-restore, Docker, fail2ban and firewalld
serialise on flock(2) of /run/xtables.lock (made 0600 when missing); python-iptables takes no
lock, so every kvmnet read-modify-commit of a legacy table holds that same lock, from its
refresh to its commit. Reads hold it too: python-iptables' refresh() commits a changed handle
first. Holds are short (one operation's table work): the lock is one file for the whole
machine, every network namespace included (/run is shared), and an iptables command run
without -w fails rather than waits while it is held.

A handle stays "changed" after a commit, so python-iptables' next refresh() (at the next
operation, perhaps minutes later) would commit its snapshot again, over what others changed
since: settle() drops the handle at the end of every transaction, committed or not.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import AgentError

LOCK_PATH = "/run/xtables.lock"  # iptables' XT_LOCK_NAME
WAIT_SECONDS = 15.0
POLL_SECONDS = 0.05

_in_process = threading.RLock()  # flock is per open file: nested holds must not reopen it
_depth = 0

F = TypeVar("F", bound=Callable[..., Any])


def _holder(fd: int) -> str:
    """Who holds the flock on `fd`'s file, from /proc/locks: `pid N (command line)`."""
    info = os.fstat(fd)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != device:
            continue
        pid = fields[4]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            argv = ""
        return f"pid {pid} ({argv[:80]})" if argv else f"pid {pid}"
    return "another process"


def _acquire(path: str, wait: float) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise AgentError(
                    "blocked",
                    f"the xtables lock {path} is still held after {wait:g} s, by {holder}; "
                    "kvmnet changed no rule; look at what that process is doing (Docker, "
                    "fail2ban, firewalld or an iptables command), then run up again",
                ) from None
            time.sleep(POLL_SECONDS)
        except BaseException:
            os.close(fd)
            raise


@contextmanager
def held(path: str | None = None, wait: float | None = None) -> Iterator[None]:
    """Hold the xtables lock (re-entrant within this process)."""
    global _depth
    with _in_process:
        fd = None
        if _depth == 0:
            fd = _acquire(path or LOCK_PATH, WAIT_SECONDS if wait is None else wait)
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
            if fd is not None:
                os.close(fd)  # releases the flock


def holding(fn: F) -> F:
    """`fn` runs holding the xtables lock."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with held():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]


def settle(table: Any) -> None:
    """After a transaction (autocommit off): drop the handle without committing it, so that
    neither a commit done nor changes left uncommitted by an error are committed again by
    python-iptables' next refresh(); then back to autocommit."""
    table.autocommit = False
    try:
        table.refresh()
    finally:
        table.autocommit = True


@contextmanager
def transaction(table: Any, what: str) -> Iterator[None]:
    """One change of `table` (autocommit off), committed at the end of the block and settled
    either way; iptables' refusal reaches the user as one line naming `what` it refused."""
    import iptc  # type: ignore[import-untyped]  # loaded by the backend before any transaction

    table.autocommit = False
    try:
        yield
        table.commit()
    except iptc.IPTCError as exc:
        raise AgentError("failed", f"iptables refused {what}: {exc}") from None
    finally:
        settle(table)
