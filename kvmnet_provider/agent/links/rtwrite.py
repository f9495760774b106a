"""Link and address changes as rtnetlink requests built here, and taps through /dev/net/tun.

The changes kvmnet makes to links are few (a bridge or a tap made, an address added or
removed, a link set or deleted), each one message. Loading pyroute2 for them cost a session
more than all of a small network's kernel changes together (its import is a tenth of a second
and more on a busy host, at the first change of every session), so the messages are built
here, with the same arguments bridges.py gave pyroute2's IPRoute.link and .addr.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from typing import Any

from .rtdump import (
    ATTR,
    HEADER,
    IFADDR,
    IFINFO,
    NETLINK_ROUTE,
    NLMSG_ERROR,
    RTM_NEWADDR,
    RTM_NEWLINK,
)

NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLA_F_NESTED = 0x8000
RTM_DELLINK, RTM_DELADDR = 17, 21
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_GROUP = 18, 20, 27
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
# linux/if_tun.h (the _IOW numbers of x86, arm, s390 and most others)
TUNSETIFF, TUNSETPERSIST, TUNSETOWNER = 0x400454CA, 0x400454CB, 0x400454CC
TUN_FLAGS = {
    "no_pi": 0x1000,
    "one_queue": 0x2000,
    "vnet_hdr": 0x4000,
    "tun_excl": 0x8000,
    "multi_queue": 0x0100,
}
IFF_TAP = 0x0002


class NetlinkError(OSError):
    """The kernel refused a request: `code` is its errno, as pyroute2's error carries it."""

    @property
    def code(self) -> int:
        return int(self.errno or 0)


def _attr(kind: int, payload: bytes) -> bytes:
    return ATTR.pack(ATTR.size + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _text(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def request(msg_type: int, flags: int, body: bytes) -> None:
    """Send one request and wait for the kernel's acknowledgement; NetlinkError if refused."""
    sock_type = socket.SOCK_RAW | socket.SOCK_CLOEXEC
    with socket.socket(socket.AF_NETLINK, sock_type, NETLINK_ROUTE) as s:
        s.bind((0, 0))
        seq = int.from_bytes(os.urandom(4), "little")
        flags |= NLM_F_REQUEST | NLM_F_ACK
        s.send(HEADER.pack(HEADER.size + len(body), msg_type, flags, seq, 0) + body)
        while True:
            data = s.recv(1 << 16)
            offset = 0
            while offset + HEADER.size <= len(data):
                length, kind, _flags, got_seq, _pid = HEADER.unpack_from(data, offset)
                payload = data[offset + HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if length < HEADER.size or got_seq != seq or kind != NLMSG_ERROR:
                    continue
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise NetlinkError(code, os.strerror(code))
                return


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


class Rtnl:
    """IPRoute's link() and addr() for the arguments kvmnet passes them."""

    def link(self, command: str, index: int = 0, **kw: Any) -> None:
        if command == "add" and kw.get("kind") == "tuntap":
            _tap_add(kw["ifname"], kw.get("ifr") or {}, kw.get("uid"))
            return
        state = kw.pop("state", None)
        flags = IFF_UP if state == "up" else 0
        change = IFF_UP if state is not None else 0
        body = IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)
        body += self._link_attrs(kw)
        if command == "add":
            request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)
        elif command == "set":
            request(RTM_NEWLINK, 0, body)
        elif command == "del":
            request(RTM_DELLINK, 0, body)
        else:
            raise ValueError(f"link command {command!r}")

    @staticmethod
    def _link_attrs(kw: dict[str, Any]) -> bytes:
        attrs = b""
        if "ifname" in kw:
            attrs += _text(IFLA_IFNAME, kw["ifname"])
        if "address" in kw:
            attrs += _attr(IFLA_ADDRESS, _mac(kw["address"]))
        for key, kind in (("mtu", IFLA_MTU), ("master", IFLA_MASTER), ("group", IFLA_GROUP)):
            if key in kw:
                attrs += _u32(kind, int(kw[key]))
        if "ifalias" in kw:
            attrs += _text(IFLA_IFALIAS, kw["ifalias"])
        if kw.get("kind") == "bridge":
            data = b""
            if "br_forward_delay" in kw:
                data += _u32(IFLA_BR_FORWARD_DELAY, int(kw["br_forward_delay"]))
            if "br_stp_state" in kw:
                data += _u32(IFLA_BR_STP_STATE, int(kw["br_stp_state"]))
            info = _text(IFLA_INFO_KIND, "bridge")
            if data:
                info += _attr(IFLA_INFO_DATA | NLA_F_NESTED, data)
            attrs += _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        return attrs

    def addr(self, command: str, index: int, address: str, prefixlen: int) -> None:
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        body = IFADDR.pack(family, prefixlen, 0, 0, index) + _attr(IFA_ADDRESS, ip.packed)
        if family == socket.AF_INET:
            body += _attr(IFA_LOCAL, ip.packed)
        if command == "add":
            request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)
        elif command == "del":
            request(RTM_DELADDR, 0, body)
        else:
            raise ValueError(f"addr command {command!r}")


def _tap_add(name: str, ifr: dict[str, Any], uid: int | None) -> None:
    """A persistent tap made as `ip tuntap add` makes one: TUNSETIFF on /dev/net/tun, its
    owner, then TUNSETPERSIST (a tap lives on after the descriptor is closed)."""
    flags = IFF_TAP
    for key, bit in TUN_FLAGS.items():
        if ifr.get(key):
            flags |= bit
    raw = name.encode()
    if len(raw) > 15:
        raise ValueError("ifname too long")
    request_ifr = struct.pack("16sH", raw, flags) + b"\0" * 22  # struct ifreq: 40 bytes
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        _ioctl(fd, TUNSETIFF, request_ifr)
        if uid is not None:
            _ioctl(fd, TUNSETOWNER, uid)
        _ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def _ioctl(fd: int, call: int, arg: bytes | int) -> None:
    try:
        fcntl.ioctl(fd, call, arg)
    except OSError as exc:
        raise NetlinkError(exc.errno, exc.strerror) from None
