"""Names that must be unique per host, checked as the program declares its networks.

Several networks (one stack, one program) may share a host, and a network has several guests:
two bridges, taps, guests or port forwards of the same name there, or two guests with one MAC,
would be one object claimed twice, and two overlapping subnets would fight over routes. Each
network claims its names on its host when it is declared, so a collision, in one network or
across two, fails the program at `preview` with a ConfigError (one line) naming the host, the
name and both claims: by their stack-config path when the program read them from stack config
(`kvmnet:guests[1].tap`, `kvmnet:hosts.h1.networks[1].bridge`), else by resource name
(`net: guests[1] (g2).tap`). Other hosts are other namespaces: the same names there are fine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .addresses import forward_key, guest_key, prefix

if TYPE_CHECKING:
    from .networks import NetworkArgs


@dataclass
class HostClaims:
    """What the networks declared so far hold on one host: (kind, name) -> who claimed it
    (`kvmnet:guests[0].tap`), and each routed subnet -> its network."""

    names: dict[tuple[str, str], str] = field(default_factory=dict)
    subnets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = field(
        default_factory=list
    )


_claims: dict[tuple[str, int], HostClaims] = {}


def network_names(network: str, args: NetworkArgs) -> Iterable[tuple[tuple[str, str], str]]:
    """((kind, name), where errors say it was declared) pairs a network holds on its host."""
    at = prefix(network, args.config_key)
    yield ("bridge", args.bridge), f"{at}bridge"
    for index, guest in enumerate(args.guests):
        who = guest_key(network, args.config_key, index, guest.name)
        # The name first: a guest declared twice has the same default tap and MAC too.
        yield ("guest", guest.name), f"{who}.name"
        yield ("tap", guest.tap), f"{who}.tap"
        yield ("MAC", guest.mac.lower()), f"{who}.mac"
    for index, forward in enumerate(args.port_forwards):
        yield (
            ("port forward", f"{forward.protocol}/{forward.host_port}"),
            f"{forward_key(network, args.config_key, index)}.host_port",
        )


def claim(network: str, args: NetworkArgs, host_subnet: bool) -> None:
    """Record `network`'s names on its host (and its subnet, when the network routes it on
    the host); ConfigError on a name another network holds."""
    host = args.connection
    claims = _claims.setdefault((host.host, host.port), HostClaims())
    me = args.config_key or network  # how errors name this network
    mine: dict[tuple[str, str], str] = {}
    for key, where in network_names(network, args):
        # A claim of its own is this network declared again in the same process (tests).
        holder = mine.get(key) or claims.names.get(key, where)
        if holder != where:
            raise ConfigError(
                where,
                f"{key[0]} {key[1]!r} is already declared on host {host.label} by {holder}; "
                "names must be unique per host (rename one of them)",
            )
        mine[key] = where
    subnet = ipaddress.ip_network(args.subnet, strict=False)
    for other, holder in claims.subnets if host_subnet else ():
        if holder != me and subnet.version == other.version and subnet.overlaps(other):
            raise ConfigError(
                f"{prefix(network, args.config_key)}subnet",
                f"subnet {subnet} overlaps {other} of network {holder} on host "
                f"{host.label}; give each network on a host its own subnet",
            )
    claims.names.update(mine)
    if host_subnet and (subnet, me) not in claims.subnets:
        claims.subnets.append((subnet, me))


def forget_all() -> None:
    """For tests that declare networks in one process more than once."""
    _claims.clear()
