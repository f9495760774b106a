"""Names that must be unique per host, checked as the program declares its networks.

Several networks (one stack, one program) may share a host: two bridges, taps or guests of the
same name there would be one object claimed twice, and two overlapping subnets would fight
over routes. Each network claims its names on its host when it is declared, so a collision
fails the program at `preview`, naming the host, the name and both networks. Other hosts are
other namespaces: the same names there are fine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .networks import NetworkArgs


@dataclass
class HostClaims:
    """What the networks declared so far hold on one host: (kind, name) -> network."""

    names: dict[tuple[str, str], str] = field(default_factory=dict)
    subnets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = field(
        default_factory=list
    )


_claims: dict[tuple[str, int], HostClaims] = {}


def network_names(args: NetworkArgs) -> Iterable[tuple[str, str]]:
    """(kind, name) pairs a network holds on its host."""
    yield "bridge", args.bridge
    for guest in args.guests:
        yield "tap", guest.tap
        yield "guest", guest.name
    for forward in args.port_forwards:
        yield "port forward", f"{forward.protocol}/{forward.host_port}"


def claim(network: str, args: NetworkArgs, host_subnet: bool) -> None:
    """Record `network`'s names on its host (and its subnet, when the network routes it on
    the host); ValueError on a name another network holds."""
    host = args.connection
    claims = _claims.setdefault((host.host, host.port), HostClaims())
    mine: dict[tuple[str, str], str] = {}
    for key in network_names(args):
        if key in mine:
            raise ValueError(
                f"{network}: {key[0]} {key[1]!r} is declared twice on host {host.label}"
            )
        mine[key] = network
        holder = claims.names.get(key)
        if holder is not None:
            raise ValueError(
                f"{network}: {key[0]} {key[1]!r} is already declared on host {host.label} "
                f"by network {holder}; names must be unique per host (rename one of them)"
            )
    subnet = ipaddress.ip_network(args.subnet, strict=False)
    for other, holder in claims.subnets if host_subnet else ():
        if subnet.version == other.version and subnet.overlaps(other):
            raise ValueError(
                f"{network}: subnet {subnet} overlaps {other} of network {holder} on host "
                f"{host.label}; give each network on a host its own subnet"
            )
    claims.names.update(mine)
    if host_subnet:
        claims.subnets.append((subnet, network))


def forget_all() -> None:
    """For tests that declare networks in one process more than once."""
    _claims.clear()
