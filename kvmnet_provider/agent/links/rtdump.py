"""The host's links and addresses, read straight from rtnetlink.

A refresh only reads, yet pyroute2's import and its message parsing were most of an agent's
CPU for it (about 150 ms to import, 25-40 ms to parse 55 links, per host per session), and a tap
create spent half its CPU parsing the three links it looks up. Reads therefore ask the kernel
here (RTM_GETLINK, RTM_GETADDR) and decode only the attributes kvmnet reports; every change
still goes through pyroute2 (links.py), which loads at the first one.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

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


def addresses() -> dict[int, list[str]]:
    """ifindex -> sorted CIDR strings, without the IPv6 link-local ones the kernel adds."""

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
        return {index: sorted(found) for index, found in book.items()}

    return _retried(take)
