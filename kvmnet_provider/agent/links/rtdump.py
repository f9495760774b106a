"""The host's links and addresses, read straight from rtnetlink.

A refresh only reads, and pyroute2's import and its parsing of every attribute of every link
would be most of an agent's CPU for it. Reads therefore ask the kernel here (RTM_GETLINK,
RTM_GETADDR, RTM_GETROUTE) and decode only the attributes kvmnet reports; bridges' and taps'
changes are made by rtwrite.py, the uplink's and guests' through pyroute2.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h
NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 4, 10, 18, 20
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFA_ADDRESS = 1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
HEADER = struct.Struct("=IHHII")  # nlmsghdr
IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
ATTR = struct.Struct("=HH")
# IFLA_INFO_DATA attributes reported per kind: (type, name as pyroute2 spells it, format).
INFO_DATA = {
    "bridge": ((1, "IFLA_BR_FORWARD_DELAY", "=I"), (5, "IFLA_BR_STP_STATE", "=I")),
    "tun": (
        (1, "IFLA_TUN_OWNER", "=I"),
        (3, "IFLA_TUN_TYPE", "=B"),
        (7, "IFLA_TUN_MULTI_QUEUE", "=B"),
    ),
}
T = TypeVar("T")
DUMP_TRIES = 5  # a dump the kernel marks interrupted (links changed meanwhile) is taken again


@dataclass(frozen=True)
class LinkRecord:
    """What kvmnet reads of one link (pyroute2 messages are turned into the same)."""

    index: int
    name: str
    flags: int
    mac: str | None
    mtu: int | None
    master: int  # the master's ifindex, 0 for none
    alias: str
    kind: str | None
    data: dict[str, int] = field(default_factory=dict)  # IFLA_INFO_DATA, names as in INFO_DATA


class DumpInterrupted(Exception):
    pass


def _attrs(buf: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of the netlink attributes in buf[start:]."""
    while start + ATTR.size <= len(buf):
        length, kind = ATTR.unpack_from(buf, start)
        if length < ATTR.size:
            return
        yield kind & NLA_TYPE_MASK, buf[start + ATTR.size : start + length]
        start += (length + 3) & ~3


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _dump(msg_type: int, body: bytes, dump: bool = True) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of every message answering one request: a dump's, or the one answer
    of a request for one object (`dump` false)."""
    sock_type = socket.SOCK_RAW | socket.SOCK_CLOEXEC
    with socket.socket(socket.AF_NETLINK, sock_type, NETLINK_ROUTE) as s:
        s.bind((0, 0))
        seq = int.from_bytes(os.urandom(4), "little")
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        s.send(HEADER.pack(HEADER.size + len(body), msg_type, flags, seq, 0) + body)
        while True:
            data = s.recv(1 << 16)
            offset = 0
            while offset + HEADER.size <= len(data):
                length, kind, flags, got_seq, _pid = HEADER.unpack_from(data, offset)
                payload = data[offset + HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if length < HEADER.size or got_seq != seq:
                    continue
                if flags & NLM_F_DUMP_INTR:
                    raise DumpInterrupted()
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return
                yield kind, payload
                if not dump:
                    return


def _retried(take: Callable[[], T]) -> T:
    for _ in range(DUMP_TRIES - 1):
        try:
            return take()
        except DumpInterrupted:
            continue
    return take()


def _link(payload: bytes) -> LinkRecord | None:
    _family, _type, index, flags, _change = IFINFO.unpack_from(payload)
    found: dict[int, bytes] = dict(_attrs(payload, IFINFO.size))
    if IFLA_IFNAME not in found:
        return None
    kind, data = None, {}
    if IFLA_LINKINFO in found:
        info = dict(_attrs(found[IFLA_LINKINFO]))
        kind = _text(info[IFLA_INFO_KIND]) if IFLA_INFO_KIND in info else None
        raw = dict(_attrs(info.get(IFLA_INFO_DATA, b"")))
        for attr, name, fmt in INFO_DATA.get(kind or "", ()):
            if attr in raw and len(raw[attr]) >= struct.calcsize(fmt):
                data[name] = struct.unpack_from(fmt, raw[attr])[0]
    mac = found.get(IFLA_ADDRESS)
    return LinkRecord(
        index=index,
        name=_text(found[IFLA_IFNAME]),
        flags=flags,
        mac=None if mac is None else ":".join(f"{b:02x}" for b in mac),
        mtu=struct.unpack_from("=I", found[IFLA_MTU])[0] if IFLA_MTU in found else None,
        master=struct.unpack_from("=I", found[IFLA_MASTER])[0] if IFLA_MASTER in found else 0,
        alias=_text(found.get(IFLA_IFALIAS, b"")),
        kind=kind,
        data=data,
    )


def link(name: str | None = None, index: int = 0) -> LinkRecord | None:
    """One link, by name or by ifindex; None when there is no such link."""
    body = IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    if name is not None:
        raw = name.encode() + b"\0"
        body += ATTR.pack(ATTR.size + len(raw), IFLA_IFNAME) + raw + b"\0" * (-len(raw) % 4)
    try:
        found = [
            _link(p) for kind, p in _dump(RTM_GETLINK, body, dump=False) if kind == RTM_NEWLINK
        ]
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise
    return found[0] if found else None


def links() -> list[LinkRecord]:
    """Every link of this network namespace."""

    def take() -> list[LinkRecord]:
        body = IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        found = (_link(p) for kind, p in _dump(RTM_GETLINK, body) if kind == RTM_NEWLINK)
        return [r for r in found if r is not None]

    return _retried(take)


def addresses(ordered: bool = False) -> dict[int, list[str]]:
    """ifindex -> sorted CIDR strings, without the IPv6 link-local ones the kernel adds.
    `ordered`: as the kernel lists them instead, primaries first (the order that makes them
    again with the same primary)."""

    def take() -> dict[int, list[str]]:
        book: dict[int, list[str]] = {}
        body = IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for kind, payload in _dump(RTM_GETADDR, body):
            if kind != RTM_NEWADDR:
                continue
            family, prefix, _flags, _scope, index = IFADDR.unpack_from(payload)
            raw = dict(_attrs(payload, IFADDR.size)).get(IFA_ADDRESS)
            if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            iface = ipaddress.ip_interface((socket.inet_ntop(family, raw), prefix))
            if not (iface.version == 6 and iface.ip.is_link_local):
                book.setdefault(index, []).append(str(iface))
        return {index: found if ordered else sorted(found) for index, found in book.items()}

    return _retried(take)


# --- routes (linux/rtnetlink.h) ------------------------------------------------------------
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
# rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTMSG = struct.Struct("=BBBBBBBBI")
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_TABLE, RTA_PREF = 15, 20
RT_TABLE_LOCAL = 255  # the kernel's own: local and broadcast routes of every address
RTM_F_CLONED = 0x200  # a cached clone, not a route anyone made


@dataclass(frozen=True)
class RouteRecord:
    """One route as the kernel lists it, with what it takes to make it again."""

    family: int
    dst: str  # "default" or a CIDR
    table: int
    proto: int
    scope: int
    type: int
    flags: int  # rtm_flags: RTNH_F_ONLINK among them
    oif: int
    gateway: str | None
    priority: int | None
    prefsrc: str | None
    pref: int | None  # IPv6 router preference


def _route(payload: bytes) -> RouteRecord:
    family, dst_len, _src_len, _tos, table, proto, scope, rtype, flags = RTMSG.unpack_from(payload)
    found: dict[int, bytes] = dict(_attrs(payload, RTMSG.size))

    def ip(attr: int) -> str | None:
        raw = found.get(attr)
        return None if raw is None else socket.inet_ntop(family, raw)

    def u32(attr: int) -> int | None:
        raw = found.get(attr)
        return None if raw is None or len(raw) < 4 else int(struct.unpack_from("=I", raw)[0])

    dst = ip(RTA_DST)
    pref = found.get(RTA_PREF)
    return RouteRecord(
        family=family,
        dst=f"{dst}/{dst_len}" if dst is not None else "default",
        table=u32(RTA_TABLE) or table,
        proto=proto,
        scope=scope,
        type=rtype,
        flags=flags,
        oif=u32(RTA_OIF) or 0,
        gateway=ip(RTA_GATEWAY),
        priority=u32(RTA_PRIORITY),
        prefsrc=ip(RTA_PREFSRC),
        pref=pref[0] if pref else None,
    )


def routes(family: int) -> list[RouteRecord]:
    """Every route of one family in every table but the kernel's local one, in the kernel's
    listing order (multipath routes have no single oif and are listed with oif 0)."""

    def take() -> list[RouteRecord]:
        body = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        found = (_route(p) for kind, p in _dump(RTM_GETROUTE, body) if kind == RTM_NEWROUTE)
        return [r for r in found if r.table != RT_TABLE_LOCAL and not r.flags & RTM_F_CLONED]

    return _retried(take)


# --- the order to make routes again ----------------------------------------------------------
RTNH_F_ONLINK = 4


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    return None if cidr == "default" else ipaddress.ip_interface(cidr).network


def _gateway_ready(route: dict[str, Any], reachable: list[Any]) -> bool:
    """Whether the kernel can take the route now: it has no gateway, the gateway is declared
    on-link (or IPv6 link-local, always on-link), or a network already there holds it."""
    gateway = route.get("gateway")
    if not gateway or int(route.get("flags") or 0) & RTNH_F_ONLINK:
        return True
    address = ipaddress.ip_address(gateway)
    return address.is_link_local or any(address in net for net in reachable)


def describe_route(route: dict[str, Any]) -> str:
    """A recorded route as `ip route` would say it, shortly."""
    via = f" via {route['gateway']}" if route.get("gateway") else ""
    onlink = " onlink" if int(route.get("flags") or 0) & RTNH_F_ONLINK else ""
    return f"{route['dst']}{via}{onlink}"


def route_order(routes: list[dict[str, Any]], addresses: list[str]) -> list[dict[str, Any]]:
    """The order in which recorded routes can be made again on a link with `addresses`.

    Routes without a gateway first, narrowest scope first (host, link): they are what a
    gateway must be reached through (`GW dev eth0 scope link` before `default via GW`). Then
    each gateway route once its gateway is reachable, through an address's network or a route
    already placed. What never becomes reachable comes last, in the order recorded: it is
    still tried, and refused on its own.
    """
    reachable = [n for n in (_network(a) for a in addresses) if n is not None]
    pending = sorted(routes, key=lambda r: (bool(r.get("gateway")), -int(r.get("scope") or 0)))
    ordered: list[dict[str, Any]] = []
    while pending:
        ready = [r for r in pending if _gateway_ready(r, reachable)]
        if not ready:
            break
        for route in ready:
            ordered.append(route)
            network = _network(route["dst"])
            if network is not None:
                reachable.append(network)
        pending = [r for r in pending if not any(r is x for x in ready)]
    return ordered + pending


KERNEL_PROTO = 2  # routes the kernel makes for an address: they follow the address


def link_routes(index: int) -> list[dict[str, Any]]:
    """The routes through one link that the kernel does not derive from an address, as
    records that say all it takes to make them again (on-link flag, scope, protocol, metric,
    table, source, type), in the kernel's listing order."""
    found = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in routes(family):
            if route.oif != index or route.proto == KERNEL_PROTO:
                continue
            if family == socket.AF_INET6 and route.dst.startswith("fe80"):
                continue
            found.append(
                {
                    "family": family,
                    "dst": route.dst,
                    "gateway": route.gateway,
                    "priority": route.priority,
                    "proto": route.proto,
                    "scope": route.scope,
                    "prefsrc": route.prefsrc,
                    "table": route.table,
                    "type": route.type,
                    "flags": route.flags & RTNH_F_ONLINK,
                    "pref": route.pref,
                }
            )
    return found
