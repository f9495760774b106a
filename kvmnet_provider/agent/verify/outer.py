"""The outside probe's life on the host: a veth link of its own with a link-local /30 (the
host's end holds .1, the probe's namespace .2 and a route to everything via .1), the probe's
process (outside.py), what the host's conntrack kept of its packets, and the removal of all
of it, also of what a killed run left (found by the network's names, checks.outside_links).

A new link takes the host's default forwarding setting; where that is off while the host
forwards (it turned forwarding on per link), it is turned on for this link only, and goes
with the link. No other setting of the host is touched."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from ..links.netlink import iproute_class
from . import checks, spawn, tracked

CHECKS_TIMEOUT = 30.0


def try_the_way_in(
    owner: str,
    inbound: tuple[str, int] | None,
    forwards: list[dict[str, Any]],
    expect_in: bool = False,
) -> tuple[dict[str, dict[str, object]], list[dict[str, object]] | None]:
    """What the outside probe saw (its `inbound` connect, tried again after a silence when it
    should get in), and what conntrack kept of its packets to the forwards' ports (None:
    conntrack could not be read)."""
    host_end, peer = checks.outside_links(owner)
    spawn.remove(host_end, peer)
    net = checks.outside_link_net(owner, host_networks())
    host_address, address = str(net[1]), str(net[2])
    proc = spawn.start("outside", host_end)
    try:
        attach(host_end, peer, proc.pid, f"{host_address}/{net.prefixlen}")
        spec = {
            "peer": peer,
            "address": address,
            "prefixlen": net.prefixlen,
            "host_address": host_address,
            "inbound": inbound[0] if inbound else None,
            "inbound_port": inbound[1] if inbound else None,
            "retry_silence": expect_in,
            "forwards": forwards,
        }
        events = tracked.follow() if forwards else None
        try:
            seen = spawn.ask(proc, spec, CHECKS_TIMEOUT)
            found = tracked.seen(events, address, host_address, len(forwards)) if forwards else []
        finally:
            if events is not None:
                events.close()
    finally:
        spawn.end(proc)
        spawn.remove(host_end, peer)
        tracked.forget(address)
    return seen, found


def host_networks() -> list[str]:
    """The host's IPv4 addresses (as networks) and the destinations of its routes."""
    ipr = iproute_class()()
    try:
        nets = [
            f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"
            for msg in ipr.get_addr(family=socket.AF_INET)
        ]
        for route in ipr.route("dump", family=socket.AF_INET):
            dst = route.get_attr("RTA_DST")
            if dst and route["dst_len"]:
                nets.append(f"{dst}/{route['dst_len']}")
        return nets
    finally:
        ipr.close()


def attach(host_end: str, peer: str, pid: int, address: str) -> None:
    """The veth pair: its peer into the probe's namespace, its host end up with `address`."""
    ipr = iproute_class()()
    try:
        ipr.link("add", ifname=host_end, kind="veth", peer=peer)
        (peer_idx,) = ipr.link_lookup(ifname=peer)
        ipr.link("set", index=peer_idx, net_ns_pid=pid)
        (idx,) = ipr.link_lookup(ifname=host_end)
        ip, prefixlen = address.split("/")
        ipr.addr("add", index=idx, address=ip, prefixlen=int(prefixlen))
        forward_on(host_end)
        ipr.link("set", index=idx, state="up")
    finally:
        ipr.close()


def forward_on(link: str, conf: Path = Path("/proc/sys/net/ipv4/conf")) -> None:
    """Forwarding on this link when the host forwards at all: the probe stands for a
    neighbour on one of the host's forwarding links (the setting goes with the link)."""
    with contextlib.suppress(OSError):
        if (conf / "all" / "forwarding").read_text().strip() != "1":
            return  # a host that does not forward: the way in is shut, and that is seen
        own = conf / link / "forwarding"
        if own.read_text().strip() != "1":
            own.write_text("1")
