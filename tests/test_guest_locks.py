"""The per-guest lock files (agent/guests/rundir.py): held one at a time, gone with the guest."""

from __future__ import annotations

import threading
import time
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


def test_a_waiter_on_a_removed_lock_file_still_excludes_the_next(state_root: Path) -> None:
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    def hold(who: str, seconds: float) -> None:
        with rundir.locked("g1"):
            inside.append(who)
            if len(inside) > 1:
                overlaps.append(tuple(inside))
            time.sleep(seconds)
            inside.remove(who)

    first = threading.Thread(target=hold, args=("a", 0.3))
    first.start()
    time.sleep(0.1)  # b and c wait on the file a removes on its way out
    others = [threading.Thread(target=hold, args=(w, 0.1)) for w in ("b", "c")]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(10)
    assert overlaps == []
    assert lock_files(state_root) == []
