"""The xtables lock helper, on a lock file of the test's own (never /run/xtables.lock), held
by another process the way iptables holds it (flock(2))."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.agent.firewall import xtables


def holder(path: Path, seconds: float) -> subprocess.Popen[bytes]:
    """`flock PATH sleep N` (util-linux), or Python doing the same; returns once it holds."""
    if shutil.which("flock"):
        argv = ["flock", str(path), "sleep", str(seconds)]
    else:
        code = (f"import fcntl,time; f=open({str(path)!r},'a'); fcntl.flock(f,fcntl.LOCK_EX); "
                f"time.sleep({seconds})")  # fmt: skip
        argv = ["python3", "-c", code]
    proc = subprocess.Popen(argv)
    for _ in range(200):
        if path.exists() and _is_held(path):
            return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the holder never took the lock")


def _is_held(path: Path) -> bool:
    try:
        with xtables.held(str(path), wait=0):
            return False
    except AgentError:
        return True


@pytest.fixture()
def lock_file(tmp_path: Path) -> Path:
    return tmp_path / "xtables.lock"


def test_a_lock_held_elsewhere_times_out_in_one_line_naming_the_holder(lock_file: Path) -> None:
    proc = holder(lock_file, 30)
    try:
        started = time.monotonic()
        with pytest.raises(AgentError) as caught, xtables.held(str(lock_file), wait=0.3):
            pass
        assert 0.3 <= time.monotonic() - started < 5
        message = caught.value.message
        assert caught.value.kind == "blocked" and "\n" not in message
        assert str(lock_file) in message and f"pid {proc.pid}" in message, message
        assert f"({proc.args[0]} " in message and "run up again" in message
    finally:
        proc.kill()
        proc.wait()


def test_a_short_hold_is_waited_for(lock_file: Path) -> None:
    proc = holder(lock_file, 0.8)
    try:
        started = time.monotonic()
        with xtables.held(str(lock_file), wait=10):
            assert time.monotonic() - started >= 0.5  # taken only once the holder let go
    finally:
        proc.kill()
        proc.wait()


def test_a_missing_lock_file_is_made_0600_and_holds_nest(lock_file: Path) -> None:
    with xtables.held(str(lock_file)), xtables.held(str(lock_file), wait=0):
        assert lock_file.stat().st_mode & 0o777 == 0o600
    with xtables.held(str(lock_file), wait=0):  # released after the outer hold
        pass


class FakeTable:
    """python-iptables' Table as far as settle() uses it: refresh() commits when autocommit."""

    def __init__(self) -> None:
        self.autocommit = False
        self.commits = 0

    def refresh(self) -> None:
        if self.autocommit:
            self.commits += 1

    def commit(self) -> None:
        self.commits += 1


def test_settle_drops_the_handle_without_committing_it_again() -> None:
    table: Any = FakeTable()
    table.commit()
    xtables.settle(table)
    assert table.commits == 1 and table.autocommit is True
