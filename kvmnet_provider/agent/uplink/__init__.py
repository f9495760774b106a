"""An uplink NIC taken over by a bridge (the bridged model), with a rollback that undoes a
change which cuts the host off (``uplink``)."""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    """The uplink.* operations; the agent loads this package at the first of them."""
    from . import uplink

    return uplink.handlers()
