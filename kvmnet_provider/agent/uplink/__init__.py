"""An uplink NIC taken over by a bridge (the bridged model), with a rollback that undoes a
change which cuts the host off (``uplink``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def handlers() -> dict[str, Callable[[dict[str, Any]], Any]]:
    """The uplink.* operations; the agent loads this package at the first of them."""
    from . import uplink

    return uplink.handlers()
