"""Operations that wait, run beside the agent's main loop; in order per object.

A guest's ACPI power-down waits up to its stop_timeout, a start waits for QMP, an uplink
change waits for its rollback process: served one at a time, each would hold up every other
request of its host. Those operations run in worker threads here, while the main thread keeps
reading requests and serving the quick ones itself (the links' one pyroute2 socket and
python-iptables stay on that thread). Requests for the same object (kind and name) run one
after another, in the order they arrived, in one thread; different objects run side by side.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import TypeGuard

from ..spec.wire import Answer

# Kinds whose operations run in workers: each opens its own netlink socket, QMP connection
# or subprocess, and takes the host-wide file locks that order it against other agents.
WAITING_KINDS = ("guest", "uplink", "dhcp")

# What a kind's operations import on the way (guests.qmp imports qemu.qmp at its first call),
# imported on the main thread before a worker needs it: imports racing between threads can
# deadlock (python-iptables' can), so workers start with theirs done.
FIRST_IMPORTS = {"guest": ("asyncio", "qemu.qmp")}

Job = Callable[[], None]


@functools.cache
def preload(kind: str) -> None:
    for module in FIRST_IMPORTS.get(kind, ()):
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # optional (the host's qemu.qmp): the worker takes the fallback path


def waits(op: object) -> TypeGuard[str]:
    """Does `op` run in a worker (rather than on the main thread)?"""
    return isinstance(op, str) and op.split(".", 1)[0] in WAITING_KINDS


def object_key(op: str, args: object) -> str:
    """The object an operation acts on: its kind and its name (or owner, or token)."""
    kind = op.split(".", 1)[0]
    if not isinstance(args, dict):
        return kind
    for field in ("name", "owner", "token"):
        if isinstance(args.get(field), str):
            return f"{kind}:{args[field]}"
    return kind  # e.g. guest.accelerator: one probe at a time is what we want anyway


class KeyedWorkers:
    """One thread per object with work; its jobs run in submission order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Job]] = {}  # key -> jobs not started yet
        self._threads: set[threading.Thread] = set()

    def submit(self, key: str, job: Job) -> None:
        with self._lock:
            queue = self._queues.get(key)
            if queue is not None:  # that object's thread is busy: it takes this one next
                queue.append(job)
                return
            self._queues[key] = deque([job])
            thread = threading.Thread(target=self._run, args=(key,), name=f"kvmnet {key}")
            self._threads.add(thread)
        thread.start()

    def _run(self, key: str) -> None:
        try:
            while True:
                with self._lock:
                    queue = self._queues[key]
                    if not queue:
                        del self._queues[key]
                        return
                    job = queue.popleft()
                try:
                    job()
                except Exception:  # handle() answers every failure; this is a bug, not a stop
                    traceback.print_exc(file=sys.stderr)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def drain(self) -> None:
        """Wait until every job submitted so far has run (the agent's input has ended: the
        operations already asked for still finish, so none is left half done)."""
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                return
            for thread in threads:
                thread.join()


def guarded(send: Callable[[Answer], None], answer: Callable[[], Answer]) -> Job:
    """A job that computes an answer and sends it; a closed output is not the job's failure."""

    def job() -> None:
        doc = answer()
        try:
            send(doc)
        except (OSError, ValueError):
            pass  # the controller is gone (broken pipe, closed file): nobody is listening

    return job
