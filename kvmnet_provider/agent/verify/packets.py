"""The few packets a probe sends and reads: ICMP echo, a DNS A query, a DHCPDISCOVER. Pure."""

from __future__ import annotations

import ipaddress
import struct

ICMP_ECHO_REPLY, ICMP_UNREACHABLE, ICMP_ECHO = 0, 3, 8
DHCP_MAGIC = b"\x63\x82\x53\x63"
DHCP_DISCOVER, DHCP_OFFER = 1, 2


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = b"kvmnet-verify"
    header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, checksum(header + payload), ident, seq) + payload


def echo_reply_kind(packet: bytes, ident: int) -> str | None:
    """`reply` for our echo's reply, `unreachable` for an ICMP error about our echo, else None
    (`packet` is what a raw socket reads: the IP header first)."""
    if len(packet) < 20:
        return None
    start = (packet[0] & 0x0F) * 4
    icmp = packet[start:]
    if len(icmp) < 8:
        return None
    kind = icmp[0]
    if kind == ICMP_ECHO_REPLY and struct.unpack("!H", icmp[4:6])[0] == ident:
        return "reply"
    if kind == ICMP_UNREACHABLE and len(icmp) >= 8 + 20 + 8:
        inner = icmp[8:]
        inner_icmp = inner[(inner[0] & 0x0F) * 4 :]
        if len(inner_icmp) >= 6 and struct.unpack("!H", inner_icmp[4:6])[0] == ident:
            return "unreachable"
    return None


def dns_query(query_id: int, name: str) -> bytes:
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)  # recursion desired
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return header + labels + b"\0" + struct.pack("!HH", 1, 1)  # A, IN


def _skip_name(data: bytes, at: int) -> int:
    while at < len(data):
        length = data[at]
        if length == 0:
            return at + 1
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return at + 2
        at += 1 + length
    raise ValueError("name runs past the packet")


def dns_addresses(data: bytes, query_id: int) -> list[str]:
    """The A records of an answer to query `query_id` (empty for another answer or none)."""
    if len(data) < 12:
        return []
    rid, flags, qd, an = struct.unpack("!HHHH", data[:8])
    if rid != query_id or not flags & 0x8000 or flags & 0x000F:
        return []
    at = 12
    try:
        for _ in range(qd):
            at = _skip_name(data, at) + 4
        found = []
        for _ in range(an):
            at = _skip_name(data, at)
            rtype, _cls, _ttl, length = struct.unpack("!HHIH", data[at : at + 10])
            at += 10
            if rtype == 1 and length == 4:
                found.append(str(ipaddress.IPv4Address(data[at : at + 4])))
            at += length
    except (ValueError, struct.error):
        return []
    return found


def dhcp_discover(xid: int, mac: str) -> bytes:
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    # op, htype, hlen, hops, xid, secs, flags (broadcast: the offer comes back to us at once)
    fixed = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000)
    fixed += b"\0" * 16 + chaddr + b"\0" * 192
    options = DHCP_MAGIC + bytes([53, 1, DHCP_DISCOVER, 55, 2, 1, 3, 255])
    return fixed + options


def dhcp_offer(data: bytes, xid: int) -> str | None:
    """The address an OFFER for our `xid` offers (None for anything else)."""
    if len(data) < 240 or data[0] != 2 or struct.unpack("!I", data[4:8])[0] != xid:
        return None
    if data[236:240] != DHCP_MAGIC:
        return None
    at = 240
    while at < len(data) and data[at] != 255:
        if data[at] == 0:
            at += 1
            continue
        code, length = data[at], data[at + 1]
        if code == 53 and length == 1 and data[at + 2] == DHCP_OFFER:
            return str(ipaddress.IPv4Address(data[16:20]))
        at += 2 + length
    return None
