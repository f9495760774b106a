"""An uplink NIC taken over by a bridge (the bridged model), with a rollback that undoes a
change which cuts the host off (``uplink``); a link's addresses and routes given back
(``routes``); an adopted bridge's addresses changed and given back under that rollback
(``adopted``)."""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    """The uplink.* and adopted.* operations; the agent loads this package at the first."""
    from . import adopted, uplink

    return {**uplink.handlers(), **adopted.handlers()}
