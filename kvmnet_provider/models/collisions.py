"""Names that must be unique per host, checked as the program declares its networks.

Several networks (one stack, one program) may share a host: two bridges, taps or guests of the
same name there would be one object claimed twice, and two overlapping subnets would fight
over routes. Each network claims its names on its host when it is declared, so a collision
fails the program at `preview` with a ConfigError (one line) naming the host, the name and both
networks: by their stack-config property when the fleet program read them from stack config
(`kvmnet:hosts.h1.networks[1].bridge`), else by resource name. Other hosts are other
namespaces: the same names there are fine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError

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


def network_names(args: NetworkArgs) -> Iterable[tuple[tuple[str, str], str]]:
    """((kind, name), the stack-config key it came from) pairs a network holds on its host."""
    yield ("bridge", args.bridge), "bridge"
    for index, guest in enumerate(args.guests):
        yield ("tap", guest.tap), f"guests[{index}].tap"
        yield ("guest", guest.name), f"guests[{index}].name"
    for index, forward in enumerate(args.port_forwards):
        yield (
            ("port forward", f"{forward.protocol}/{forward.host_port}"),
            (f"portForwards[{index}].host_port"),
        )


def claim(network: str, args: NetworkArgs, host_subnet: bool) -> None:
    """Record `network`'s names on its host (and its subnet, when the network routes it on
    the host); ConfigError on a name another network holds."""
    host = args.connection
    claims = _claims.setdefault((host.host, host.port), HostClaims())
    me = args.config_key or network  # how errors name this network

    def where(config_key: str) -> str:
        return f"{args.config_key}.{config_key}" if args.config_key else network

    mine: dict[tuple[str, str], str] = {}
    for key, config_key in network_names(args):
        if key in mine:
            raise ConfigError(
                where(config_key),
                f"{key[0]} {key[1]!r} is declared twice on host {host.label} (rename one)",
            )
        mine[key] = me
        holder = claims.names.get(key)
        if holder is not None:
            raise ConfigError(
                where(config_key),
                f"{key[0]} {key[1]!r} is already declared on host {host.label} "
                f"by network {holder}; names must be unique per host (rename one of them)",
            )
    subnet = ipaddress.ip_network(args.subnet, strict=False)
    for other, holder in claims.subnets if host_subnet else ():
        if subnet.version == other.version and subnet.overlaps(other):
            raise ConfigError(
                where("subnet"),
                f"subnet {subnet} overlaps {other} of network {holder} on host "
                f"{host.label}; give each network on a host its own subnet",
            )
    claims.names.update(mine)
    if host_subnet:
        claims.subnets.append((subnet, me))


def forget_all() -> None:
    """For tests that declare networks in one process more than once."""
    _claims.clear()
