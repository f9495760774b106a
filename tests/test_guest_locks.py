"""The per-guest lock files (agent/guests/rundir.py): held one at a time, gone with the guest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmnet_provider.agent import hoststate
from kvmnet_provider.agent.guests import rundir


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(hoststate, "ROOT", tmp_path / "run")
    return tmp_path / "run"


def lock_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("netns-*/guest-locks/*"))


def test_a_guest_without_a_run_dir_leaves_no_lock_file(state_root: Path) -> None:
    with rundir.locked("g1") as guests:
        (guests / "g1").mkdir()
    assert lock_files(state_root) == ["g1"]  # the guest lives: its lock stays
    with rundir.locked("g1") as guests:
        (guests / "g1").rmdir()
    assert lock_files(state_root) == []


def waiters_on(path: Path) -> int:
    """How many flock() calls wait on the file at `path` (the kernel's /proc/locks)."""
    ino = path.stat().st_ino
    count = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and any(f.count(":") == 2 and f.endswith(f":{ino}") for f in fields):
            count += 1
    return count


def test_a_waiter_on_a_removed_lock_file_still_excludes_the_next(state_root: Path) -> None:
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    entered = threading.Event()
    met: list[tuple[str, bool]] = []

    def hold(who: str, until: Callable[[], bool]) -> None:
        with rundir.locked("g1"):
            inside.append(who)
            entered.set()
            if len(inside) > 1:
                overlaps.append(tuple(inside))
            deadline = time.monotonic() + 10
            while not until() and time.monotonic() < deadline:
                time.sleep(0.01)
            met.append((who, until()))
            inside.remove(who)

    # a holds the lock until b and c both wait on its file, which a removes on its way out
    lock = hoststate.namespace_dir() / "guest-locks" / "g1"
    first = threading.Thread(target=hold, args=("a", lambda: waiters_on(lock) == 2))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=hold, args=(w, lambda: True)) for w in ("b", "c")]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(15)
    assert not any(t.is_alive() for t in [first, *others])
    assert met[0] == ("a", True)  # b and c did wait on a's file
    assert overlaps == []
    assert lock_files(state_root) == []
