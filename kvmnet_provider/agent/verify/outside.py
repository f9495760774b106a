"""The outside probe's own process: a neighbour of the host that routes the network's subnet
through it, on a veth link of its own (no bridge, no uplink).

Started like the bridge's probe (probe.py's BOOT): it leaves the host's namespace, says
`ready`, reads its spec (the veth peer is in by then), and tries the way in: a TCP connect to
the bridge probe's listener (refused on NAT, let in on routed), then one packet to the host's
port of each forward (what became of it, conntrack on the host tells). It prints what it saw
as one JSON line; its namespace, and with it the veth pair, dies with it.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

from ..links.netlink import iproute_class
from .inside import connect, leave_host_namespace, ping

FORWARD_WAIT = 0.2  # the packets are on the host's hooks within this


def configure(spec: dict[str, Any]) -> None:
    """lo and the peer up, its address, the host's end as the route to everything."""
    ipr = iproute_class()()
    try:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        (idx,) = ipr.link_lookup(ifname=spec["peer"])
        ipr.addr("add", index=idx, address=spec["address"], prefixlen=spec["prefixlen"])
        ipr.link("set", index=idx, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=spec["host_address"])
    finally:
        ipr.close()


def knock(address: str, forwards: list[dict[str, Any]]) -> None:
    """One packet to each forward's port of `address` (TCP: a SYN, by a connect that is not
    waited for; UDP: a datagram). What the host did with it is in its conntrack table."""
    opened = []
    for fwd in forwards:
        if fwd["protocol"] == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(b"kvmnet-verify", (address, fwd["host_port"]))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((address, fwd["host_port"]))
        opened.append(sock)
    time.sleep(FORWARD_WAIT)
    for sock in opened:
        sock.close()


def way_in(address: str, port: int, retry_silence: bool) -> dict[str, object]:
    """The connect to the bridge probe; where it should get in, tried again once after a
    silence: a handshake lost on a busy host is not a refusal (a REJECT answers at once)."""
    seen = connect(address, port)
    if retry_silence and not seen["reached"] and "no answer" in str(seen["detail"]):
        seen = connect(address, port)
    return seen


def main() -> None:
    leave_host_namespace()
    print("ready", flush=True)
    spec = json.loads(sys.stdin.readline())
    configure(spec)
    ping(spec["host_address"])  # the link up and the host's end resolved before the checks
    seen: dict[str, dict[str, object]] = {}
    if spec.get("inbound"):
        seen["inbound"] = way_in(spec["inbound"], spec["inbound_port"], spec["retry_silence"])
    knock(spec["host_address"], spec.get("forwards") or [])
    print(json.dumps(seen), flush=True)
