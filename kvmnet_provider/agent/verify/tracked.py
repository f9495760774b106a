"""What the host's conntrack saw of the outside probe's packets to the port forwards.

A connection enters the table only once its first packet passed the host's last hook (the
entry is confirmed there), with the reply tuple the DNAT rule made. The entry may not stay:
a guest that is up and refuses the port answers with a RST, and conntrack then drops the
entry at once. So the new-connection events are followed while the probe sends (a netlink
socket bound to their group), and the table is read as well (for a host that sends no
events); both filtered by the probe's own address. Afterwards the probe's entries are
deleted, so nothing of it stays on the host.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from typing import Any

from ..links.netlink import iproute_class

NETLINK_NETFILTER = 12
NFNLGRP_CONNTRACK_NEW = 1
EVENT_BUFFER = 1 << 20
TRACK_WAIT = 1.0  # a packet's connection is in the events or the table within this
PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}


def _nfct() -> Any:
    iproute_class()  # pyroute2 registered without its package's heavy __init__
    from pyroute2.netlink.nfnetlink import nfctsocket

    return nfctsocket


def follow() -> socket.socket | None:
    """A socket that receives conntrack's new-connection events (None where there is none)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EVENT_BUFFER)
        sock.bind((0, 1 << (NFNLGRP_CONNTRACK_NEW - 1)))
    except OSError:
        sock.close()
        return None
    return sock


def _tuples(msg: Any) -> tuple[Any, Any]:
    attr_tuple = _nfct().NFCTAttrTuple
    orig = attr_tuple.from_netlink(socket.AF_INET, msg.get_attr("CTA_TUPLE_ORIG"))
    reply = attr_tuple.from_netlink(socket.AF_INET, msg.get_attr("CTA_TUPLE_REPLY"))
    return orig, reply


def _events(sock: socket.socket) -> list[tuple[Any, Any]]:
    """The (original, reply) tuples of the events waiting on `sock`."""
    found = []
    while select.select([sock], [], [], 0)[0]:
        try:
            data = sock.recv(EVENT_BUFFER)
        except OSError:  # overrun on a busy host: the table read still counts
            break
        at = 0
        while at + 16 <= len(data):
            (length,) = struct.unpack_from("=I", data, at)
            if length < 16:
                break
            with contextlib.suppress(Exception):  # another family's or a malformed event
                msg = _nfct().nfct_msg(data[at : at + length])
                msg.decode()
                if msg["nfgen_family"] == socket.AF_INET:
                    found.append(_tuples(msg))
            at += (length + 3) & ~3
    return found


def _table() -> list[tuple[Any, Any]]:
    sock = _nfct().NFCTSocket()
    try:
        return [_tuples(msg) for msg in sock.dump()]
    finally:
        sock.close()


def seen(
    events: socket.socket | None, source: str, host_address: str, count: int
) -> list[dict[str, object]] | None:
    """What conntrack saw of `source`'s packets to `host_address` (waiting a moment for
    `count` of them); None when it could tell nothing (no events, no table)."""
    pairs: dict[tuple[Any, ...], tuple[Any, Any]] = {}
    readable = events is not None
    deadline = time.monotonic() + TRACK_WAIT
    while True:
        got = _events(events) if events is not None else []
        try:
            got += _table()
            readable = True
        except Exception:  # no conntrack netlink here
            pass
        for orig, reply in got:
            if orig.saddr == source and orig.daddr == host_address:
                pairs[(orig.proto, orig.sport, orig.dport)] = (orig, reply)
        if len(pairs) >= count or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not readable:
        return None
    return [
        {
            "protocol": PROTOCOLS.get(orig.proto),
            "dport": orig.dport,
            "reply_src": reply.saddr,
            "reply_sport": reply.sport,
        }
        for orig, reply in pairs.values()
    ]


def forget(source: str) -> None:
    """The probe's entries out of the table: it leaves nothing behind on the host."""
    with contextlib.suppress(Exception):
        sock = _nfct().NFCTSocket()
        try:
            for orig, _ in _table():
                if orig.saddr == source:
                    with contextlib.suppress(Exception):  # gone meanwhile
                        sock.entry("del", tuple_orig=orig)
        finally:
            sock.close()
