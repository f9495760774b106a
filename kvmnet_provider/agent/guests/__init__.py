"""QEMU guests on the host: start detached, find, and stop, with ownership recorded.

Each guest has a run directory, ``<hoststate root>/netns-<inode>/guests/<name>/``, keyed by the
network namespace like the rest of the host state, so lab hosts sharing a filesystem keep
separate guests. It holds:

- ``qemu.pid``   QEMU's own pidfile (``-pidfile``);
- ``guest.json`` the owner, the argv and its hash, the accelerator used and why;
- ``qemu.log``   what QEMU printed before it detached (its errors);
- ``console.sock``, ``console.log``, ``qmp.sock`` unless other socket paths were asked for.

QEMU runs with ``-daemonize``, so it outlives the agent, the SSH session and the provider.
A PID is only ever signalled after /proc/PID/cmdline shows it is QEMU running with our
``-name`` and our ``-pidfile``.

The spec's rules live in kvmnet_provider/spec/guest.py (the provider checks with them too).
Modules: ``argv`` (QEMU's command line, pure; the lab's test guests use it too), ``kvm`` (does
KVM really work here?), ``qmp`` (two QMP clients), ``process`` (finding, signalling and
stopping our QEMU), ``rundir`` (the run directory's records), ``operations`` (start, read,
stop: the agent's guest.* requests), ``ready`` (guest.probe: addresses, and what `ready` waits for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def handlers() -> dict[str, Callable[[dict[str, Any]], Any]]:
    """The guest.* operations; the agent loads this package at the first of them."""
    from . import operations, ready

    return {**operations.handlers(), "guest.probe": ready.probe}
