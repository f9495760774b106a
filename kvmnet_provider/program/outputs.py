"""What the stack exports of each network, the same for the one-host program and a fleet's
networks: the one-host program's outputs are its one network's at the stack's top level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..resources import Bridge
from .guests import guest_outputs

if TYPE_CHECKING:
    from ..models.networks import _Network


def network_outputs(network: _Network) -> dict[str, Any]:
    """The model, the bridge and its addresses (a bridged network's: those it took over from
    the NIC), the port forwards, the guests and, with DHCP, the leases."""
    args = network.args
    out: dict[str, Any] = {
        "model": network.model,
        "bridge": network.bridge.name,
        "port_forwards": [vars(f) for f in args.port_forwards],
        "guests": guest_outputs(args.guests, network.guests),
    }
    if isinstance(network.bridge, Bridge):
        out["bridge_addresses"] = network.bridge.addresses
    else:
        out["uplink_addresses"] = network.bridge.live_addresses
    if network.dhcp is not None:
        out["leases"] = network.dhcp.leases
    return out
