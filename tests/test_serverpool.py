"""The dynamic-provider server's pool: the SDK's four threads become WORKERS, in that server
only (no engine here: the server's module is stood in for, its pool is a real executor)."""

from __future__ import annotations

import re
import sys
import threading
import traceback
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pulumi
import pytest

from kvmnet_provider import serverpool

SERVER = Path(pulumi.__file__).parent / "dynamic" / "__main__.py"


@pytest.fixture
def in_server() -> Iterator[None]:
    """This process looks like `python -m pulumi.dynamic` to errors.dynamic_servers()."""
    stand_in = types.ModuleType("pulumi.dynamic.__main__")
    stand_in._abort_with_traceback = lambda fn: fn  # type: ignore[attr-defined]
    stand_in.traceback = traceback  # type: ignore[attr-defined]
    sys.modules["pulumi.dynamic.__main__"] = stand_in
    try:
        yield
    finally:
        del sys.modules["pulumi.dynamic.__main__"]


def test_the_sdk_still_serves_from_four_threads() -> None:
    """When the SDK changes its pool, widen() stops touching it: this test says so first."""
    assert re.search(
        rf"ThreadPoolExecutor\(max_workers={serverpool.SDK_WORKERS}\)", SERVER.read_text()
    )


def test_outside_the_server_nothing_changes() -> None:
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        assert pool.submit(serverpool.widen).result(timeout=10) is None
        assert pool._max_workers == 4
    finally:
        pool.shutdown()


def test_the_servers_pool_runs_more_than_four_at_once(in_server: None) -> None:
    """As in the server: the first call widens the pool while seven more are already queued
    behind the four threads; all eight must then run at once (they wait for each other: with
    four threads the barrier would break on its timeout, and result() would raise)."""
    pool = ThreadPoolExecutor(max_workers=serverpool.SDK_WORKERS)
    together = threading.Barrier(8, timeout=10)
    widened: list[int | None] = []

    def first() -> int:
        widened.append(serverpool.widen())
        return together.wait()

    try:
        calls = [pool.submit(first)] + [pool.submit(together.wait) for _ in range(7)]
        arrivals = sorted(c.result(timeout=20) for c in calls)
        assert arrivals == list(range(8))  # each of the eight passed the barrier, together
        assert widened == [serverpool.WORKERS]
        assert len(pool._threads) == serverpool.WORKERS
        assert pool.submit(serverpool.widen).result(timeout=10) == serverpool.WORKERS  # once
    finally:
        pool.shutdown()


def test_a_pool_of_another_size_is_left_alone(in_server: None) -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        assert pool.submit(serverpool.widen).result(timeout=10) == 2
        assert serverpool.widen() is None  # not a pool's thread at all
    finally:
        pool.shutdown()
