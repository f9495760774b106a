"""More than four kvmnet operations at once in Pulumi's dynamic-provider server.

`python -m pulumi.dynamic` serves gRPC from `ThreadPoolExecutor(max_workers=4)`, a number it
does not let anyone set: whatever `--parallel` says, a fifth operation waits for one of four
threads, even when those four only wait (for a host's SSH handshake, a guest's power-down).
With a fleet, four threads waiting on four hosts' sessions hold up the reads of every other
host. The first kvmnet operation in the provider process runs on one of that pool's threads;
it raises the pool's bound to WORKERS and starts the threads, so the engine's `--parallel`
decides. (Started at once, not left to submit(): submit() starts a thread only when no idle
one is banked, and every finished call banks one, so requests already queued behind the four
would never get threads of their own.) Anything but the SDK's own pool, with its own bound,
is left alone.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import thread as executor_threads

from .errors import dynamic_servers

SDK_WORKERS = 4  # pulumi/dynamic/__main__.py
WORKERS = 32


def serving_pool() -> ThreadPoolExecutor | None:
    """The executor whose worker thread this is, in the dynamic-provider server only."""
    if not dynamic_servers():
        return None  # the program, a test: not Pulumi's server
    args = getattr(threading.current_thread(), "_args", ())
    executor = args[0]() if args and callable(args[0]) else None  # the worker's weakref
    return executor if isinstance(executor, ThreadPoolExecutor) else None


def widen(workers: int = WORKERS) -> int | None:
    """Raise the server pool's bound from the SDK's four to `workers`; the bound now, or None
    outside the server."""
    executor = serving_pool()
    if executor is None:
        return None
    with executor._shutdown_lock, executor_threads._global_shutdown_lock:  # as submit() does
        if executor._max_workers == SDK_WORKERS and not executor._shutdown:
            executor._max_workers = workers
            while len(executor._threads) < workers:
                executor._adjust_thread_count()  # uses up a banked idle one, or starts a thread
        return executor._max_workers
