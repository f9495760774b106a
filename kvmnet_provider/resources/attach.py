"""Guests whose taps were made again under them (deleted behind kvmnet's back, then made
again by `up`): their QEMU still holds the deleted tap and the guest is cut off. The agent's
read says so (`replaced_taps`); that reads as drift, and the update (the guest's host_update)
restarts the guest on its disk, which opens the tap that exists now, and waits for it to be
ready like any restart. A restart, not a NIC hot-swap over QMP: a guest's own network setup
(a static address given on its kernel command line, a DHCP client that ran once) is redone
at boot but not for a NIC plugged in later."""

from __future__ import annotations

from typing import Any

from pulumi.dynamic import DiffResult

from .base import KvmnetProvider


class RestartsCutOffGuests(KvmnetProvider):
    """Put before KvmnetProvider in a guest provider's bases."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = super().diff(_id, olds, news)
        if olds.get("replaced_taps") and not result.changes:  # cut off: an update
            return DiffResult(changes=True, replaces=[], delete_before_replace=True)
        return result
