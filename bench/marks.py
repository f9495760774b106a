"""A timed `pulumi up` with a watcher beside it: the watcher notes when marks appear (a
console line, a lease) in `seen`, as seconds from `up`'s start; the round ends when `done`
says so, and the stack is destroyed whatever happened."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kvmnet_lab.testing.stack import TestStack

Seen = dict[str, float]


def timed_up(
    stack: TestStack,
    watch: Callable[[float, Seen, threading.Event], None],
    done: Callable[[Seen], bool],
    timeout: float,
    what: str,
    poll: float = 0.05,
) -> Seen:
    """`up` of `stack` with `watch(t0, seen, stop)` on a thread of its own; `seen["up"]` is when
    `up` returned. RuntimeError naming `what` when `done(seen)` is not true within `timeout`."""
    seen: Seen = {}
    stop = threading.Event()
    t0 = time.monotonic()
    watcher = threading.Thread(target=watch, args=(t0, seen, stop), daemon=True)
    watcher.start()
    try:
        stack.up()
        seen["up"] = time.monotonic() - t0
        deadline = time.monotonic() + timeout
        while not done(seen):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} within {timeout:g} s: {seen}")
            time.sleep(poll)
    finally:
        stop.set()
        watcher.join()
        stack.destroy()
    return seen
