"""A fleet stack's reachability, per host and network: probe.observe on each network's guests.

Used by `kvmnet demo up --model fleet` to print one table per host and network, and by the
fleet's end-to-end test to assert them. The hosts' networks are probed one after another: the
probes type into guest consoles and capture in the one outside host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .lab import LabStatus
from .probe import LEGEND, GuestEndpoint, Observation, Outside, format_table, observe


@dataclass(frozen=True)
class FleetNetwork:
    host: str  # the lab host's name (h1...)
    name: str
    model: str
    bridge_ip: str | None
    guests: list[GuestEndpoint]


def fleet_networks(outputs: dict[str, Any]) -> list[FleetNetwork]:
    """The networks of a fleet stack's `hosts` output, in host and network order."""
    found = []
    for host, spec in sorted(outputs["hosts"].items()):
        for name, net in spec["networks"].items():
            addresses = net.get("bridge_addresses") or []
            found.append(
                FleetNetwork(
                    host,
                    name,
                    str(net["model"]),
                    str(addresses[0]).split("/")[0] if addresses else None,
                    [
                        GuestEndpoint(g, str(v["address"]), str(v["console"]))
                        for g, v in sorted(net["guests"].items())
                    ],
                )
            )
    return found


def observe_fleet(
    outputs: dict[str, Any], lab: LabStatus
) -> list[tuple[FleetNetwork, Observation]]:
    outside = Outside(lab.ext.namespace, lab.ext.address, lab.ext.echo_port)
    return [
        (net, observe(net.guests, net.bridge_ip, lab.host(net.host).address, outside))
        for net in fleet_networks(outputs)
    ]


def format_fleet(observed: list[tuple[FleetNetwork, Observation]], lab: LabStatus) -> str:
    blocks = []
    for net, observation in observed:
        address = lab.host(net.host).address
        blocks.append(
            f"host {net.host} ({address}), network {net.name} ({net.model}, guests "
            f"{', '.join(g.name for g in net.guests)}):\n"
            + format_table(net.model, observation).replace(LEGEND + "\n", "")
        )
    return "\n\n".join(blocks) + "\n" + LEGEND


def fleet_guests(outputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A fleet stack's guests by `host/guest` (what `kvmnet demo console` takes)."""
    return {
        f"{host}/{name}": guest
        for host, spec in sorted(outputs.get("hosts", {}).items())
        for net in spec["networks"].values()
        for name, guest in sorted(net["guests"].items())
    }
