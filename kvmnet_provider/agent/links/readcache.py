"""How long one dump of the host's links may answer reads: until anything but a read arrives.

`pulumi refresh` reads every resource, at most a few at a time (the dynamic provider serves
four operations at once), so batches of link reads are small and one dump each would cost more
than it saves. One dump instead answers the reads that follow it, until a request that may
change the host arrives or the dump is SNAPSHOT_TTL old (a change made outside kvmnet is seen
by reads after that). An operation that runs in a worker (an uplink change) drops the dump
when it starts; a dump taken while it runs may lag it by up to SNAPSHOT_TTL. Kept apart from
dump.py so the request loop can note requests without importing pyroute2 early (netlink.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any

SNAPSHOT_TTL = 2.0  # seconds
# Requests that change nothing on the host: they leave a dump valid.
READ_ONLY = frozenset(
    {
        "ping",
        "link.read",
        "link.read.many",
        "link.read.all",
        "link.read.all.many",
        "forwarding.read",
        "masquerade.read",
        "dnat.read",
        "guest.read",
        "guest.probe",
    }
)

_lock = threading.Lock()
_snapshot: tuple[float, Any] | None = None


def note_request(op: object) -> None:
    """Called for every request before it runs: a possible change drops the dump."""
    global _snapshot
    if op not in READ_ONLY:
        with _lock:
            _snapshot = None


def fresh() -> Any | None:
    """The last dump while it may still answer reads, else None."""
    with _lock:
        if _snapshot is not None and time.monotonic() - _snapshot[0] < SNAPSHOT_TTL:
            return _snapshot[1]
    return None


def keep(dump: Any, taken: float) -> None:
    """Keep `dump`, taken at `taken` (time.monotonic() before the kernel was asked)."""
    global _snapshot
    with _lock:
        _snapshot = (taken, dump)
