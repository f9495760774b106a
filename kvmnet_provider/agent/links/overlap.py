"""Which networks a bridge may not take: those that would capture the host's own traffic.

A bridge's address puts a route to its network on the bridge. When that network overlaps
another link's network (equal, inside it or around it) or a route through another link, part
of the addresses the host reaches through that link are claimed by the bridge too: a more
specific network takes their traffic (the operator's SSH replies, the LAN's neighbours, a
VPN's peers), a wider one puts guests where the host cannot reach them. So a bridge's new
address is checked, before anything changes, against one reading of the host's links,
addresses and routes (all tables but the kernel's local one) and against the address the
agent's SSH session comes from.

Routes shorter than MIN_PREFIX (a default route, a VPN's 0.0.0.0/1 pair) are not counted:
every network lies inside them, and a bridge's more specific route taking its own network
from them is what a bridge is for; the session's address is checked on its own.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ...spec.validate import MIN_NETWORK_PREFIX as MIN_PREFIX
from . import rtdump
from .rtdump import LinkRecord, RouteRecord
from .state import owner_in

RTN_UNICAST = 1  # routes that carry traffic; blackhole, unreachable etc. deliver nothing

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HostNetworks:
    """One reading of what the host routes: its links, their addresses and its routes."""

    links: Mapping[int, LinkRecord]
    addresses: Mapping[int, list[str]]
    routes: list[RouteRecord]


def read_host() -> HostNetworks:
    """The host's links, addresses and routes (both families, every table), read once for
    every check of one request."""
    return HostNetworks(
        links={link.index: link for link in rtdump.links()},
        addresses=rtdump.addresses(),
        routes=[
            r
            for r in rtdump.routes(socket.AF_UNSPEC)
            if r.family in (socket.AF_INET, socket.AF_INET6)
        ],
    )


def _link_name(host: HostNetworks, index: int, detail: str = "") -> str:
    """A link's name, with `detail` and the kvmnet resource that owns it in brackets."""
    link = host.links.get(index)
    name = link.name if link else (f"link {index}" if index else "several links")
    owner = owner_in(link.alias) if link else None
    inside = ", ".join(x for x in (detail, f"kvmnet resource {owner}" if owner else "") if x)
    return f"{name} ({inside})" if inside else name


def _route_text(route: RouteRecord, host: HostNetworks) -> str:
    via = f" via {route.gateway}" if route.gateway else ""
    table = "" if route.table == 254 else f" table {route.table}"  # 254: the main table
    return f"route {route.dst}{via} dev {_link_name(host, route.oif)}{table}"


def clash(
    added: list[str], mine: int | None, host: HostNetworks, peers: Iterable[str] = ()
) -> str | None:
    """Why the addresses `added` may not go on the bridge `mine` (its ifindex, None before it
    exists): the first network that contains an address the SSH session comes from
    (`peers`), or overlaps another link's address or a route through another link. None
    when none does."""
    for addr in added:
        net = ipaddress.ip_interface(addr).network
        found = _peer_clash(net, peers) or _address_clash(net, mine, host)
        found = found or _route_clash(net, mine, host)
        if found:
            return f"{addr}: {found}"
    return None


def _peer_clash(net: Network, peers: Iterable[str]) -> str | None:
    inside = sorted(p for p in peers if ipaddress.ip_address(p) in net)  # other family: never
    if not inside:
        return None
    peer = inside[0]
    return (
        f"network {net} contains {peer}, the address kvmnet's SSH session comes from: the "
        "host's replies to it would go into the bridge and cut the session off; give this "
        "bridge a subnet that does not contain the operator's address"
    )


def _address_clash(net: Network, mine: int | None, host: HostNetworks) -> str | None:
    for index, found in sorted(host.addresses.items()):
        if index == mine:
            continue
        for other in found:
            theirs = ipaddress.ip_interface(other).network
            if theirs.version != net.version or not net.overlaps(theirs):
                continue
            where = _link_name(host, index, other)
            if theirs == net:
                return (
                    f"network {net} is already on {where}; two links with one network split "
                    "its traffic: give this bridge its own subnet"
                )
            return (
                f"network {net} overlaps {theirs} of {where}, which the host already reaches "
                "there; give this bridge a subnet apart from the host's networks"
            )
    return None


def _route_clash(net: Network, mine: int | None, host: HostNetworks) -> str | None:
    for route in host.routes:
        if route.dst == "default" or route.type != RTN_UNICAST:
            continue
        if mine is not None and route.oif == mine:
            continue
        theirs = ipaddress.ip_network(route.dst, strict=False)
        if theirs.version != net.version or theirs.prefixlen < MIN_PREFIX:
            continue
        if theirs.version == 6 and theirs.network_address.is_link_local:
            continue
        if not net.overlaps(theirs):
            continue
        return (
            f"network {net} overlaps the host's {_route_text(route, host)}, which the host "
            "already reaches that way; give this bridge a subnet apart from the host's routes"
        )
    return None
