"""Autostart: the records of what kvmnet applied on this host (records.py), the code copy
and systemd unit that bring them back at boot (unit.py), and the restore itself
(restore.py). The request loop feeds it through book() after each mutating operation."""

from __future__ import annotations

import sys
import threading
from typing import Any

from ..rundir import name_lock

_lock = threading.Lock()  # the agent's worker threads book one at a time


def book(op: str, args: dict[str, Any], result: Any, autostart: bool) -> None:
    """Keep the records (and the unit) in step with one operation that succeeded. A failure
    here is the reboot's loss, not the operation's: one line on stderr."""
    from . import records, unit

    try:
        if op == records.FORGET and not records.has_records():
            return  # nothing to forget: no books made for it
        with _lock:
            directory = records.namespace_dir()
            with name_lock(directory, "boot.lock", kept_while=directory / "records"):
                if records.note(op, args, result, autostart) or not records.has_records():
                    unit.sync(records.has_records())
            if not records.has_records():
                unit.prune()  # the lock file went on the way out: its directory can go too
    except Exception as exc:
        print(f"kvmnet: {op}: not recorded for the next boot: {exc}", file=sys.stderr)
