"""The probe's own process: a fresh network namespace, one veth end, and the checks from there.

Started by probe.py as a new Python (never a fork of the threaded agent). It leaves the host's
namespace at once (unshare(CLONE_NEWNET) through ctypes: Debian's Python 3.11 has no
os.unshare), says `ready`, waits for its spec (one JSON line: the agent has moved the veth
peer in by then), configures the peer, runs the checks and prints what it saw as one JSON
line. Its namespace dies with it, and the veth pair with the namespace.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..links.netlink import iproute_class
from . import packets

CLONE_NEWNET = 0x40000000
ICMP_TIMEOUT = 1.0
TCP_TIMEOUT = 3.0
UDP_TIMEOUT = 2.0
TRIES = 3
ATF_COM = 0x02  # an ARP entry that holds a MAC


def leave_host_namespace() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


def configure(spec: dict[str, Any]) -> None:
    """lo and the peer up, the probe's MAC and address, a default route via the gateway."""
    ipr = iproute_class()()
    try:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        (idx,) = ipr.link_lookup(ifname=spec["peer"])
        ipr.link("set", index=idx, address=spec["mac"])
        ipr.addr("add", index=idx, address=spec["address"], prefixlen=spec["prefixlen"])
        ipr.link("set", index=idx, state="up")
        if spec.get("gateway"):
            ipr.route("add", dst="0.0.0.0/0", gateway=spec["gateway"])
    finally:
        ipr.close()


def ping(address: str) -> dict[str, object]:
    """ICMP echo (a raw socket: the probe runs as root): reached when `address` replies."""
    ident = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for seq in range(1, TRIES + 1):
            try:
                sock.sendto(packets.echo_request(ident, seq), (address, 0))
            except OSError as exc:
                return {"reached": False, "detail": f"ping {address}: {exc.strerror}"}
            deadline = time.monotonic() + ICMP_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, (source, _) = sock.recvfrom(2048)
                except TimeoutError:
                    break
                kind = packets.echo_reply_kind(data, ident)
                if kind == "reply" and source == address:
                    return {"reached": True, "detail": f"{address} answered ping"}
                if kind == "unreachable":
                    return {"reached": False, "detail": f"ping {address}: unreachable ({source})"}
    return {"reached": False, "detail": f"no answer to ping {address} in {TRIES} tries"}


def gateway(address: str) -> dict[str, object]:
    """The gateway answers ping, or, on a host whose own firewall drops ping (an INPUT DROP
    policy that kvmnet opens only for DHCP and DNS), at least ARP: it is on the bridge, and
    what it forwards is the outside check's business."""
    seen = ping(address)
    if not seen["reached"] and arp_resolved(address):
        return {"reached": True, "detail": f"{address} answered ARP, not ping (the host's "
                "firewall drops ping to it)"}
    return seen


def arp_resolved(address: str, table: str = "/proc/net/arp") -> bool:
    """Whether this namespace's ARP table holds `address` with a MAC (flags: complete)."""
    try:
        with open(table) as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        fields = row.split()
        if len(fields) >= 4 and fields[0] == address and int(fields[2], 16) & ATF_COM:
            return fields[3] != "00:00:00:00:00:00"
    return False


def connect(address: str, port: int) -> dict[str, object]:
    """TCP connect: reached only when the handshake completes (a REJECT also says refused)."""
    try:
        with socket.create_connection((address, port), timeout=TCP_TIMEOUT):
            return {"reached": True, "detail": f"connected to {address}:{port}"}
    except TimeoutError:
        return {"reached": False, "detail": f"no answer from {address}:{port} in {TCP_TIMEOUT:g}s"}
    except OSError as exc:
        return {"reached": False, "detail": f"{address}:{port}: {exc.strerror}"}


def dns(server: str, name: str, want: str | None) -> dict[str, object]:
    """An A query for `name` at `server`:53: answered when an A record comes back (`want`'s,
    when the guest has a static address)."""
    query_id = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(UDP_TIMEOUT)
        for _ in range(TRIES):
            try:
                sock.sendto(packets.dns_query(query_id, name), (server, 53))
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                return {"reached": False, "detail": f"DNS {server}: {exc.strerror}"}
            found = packets.dns_addresses(data, query_id)
            if want and want not in found:
                return {"reached": False, "detail": f"{name} is {found or 'unknown'}, not {want}"}
            if found:
                return {"reached": True, "detail": f"{name} is {', '.join(found)}"}
            return {"reached": False, "detail": f"{server} does not know {name}"}
    return {"reached": False, "detail": f"no DNS answer from {server} in {TRIES} tries"}


def dhcp(interface: str, mac: str) -> dict[str, object]:
    """A DHCPDISCOVER broadcast on the peer: answered when an offer comes back. No request
    follows, so the server keeps no lease."""
    xid = int.from_bytes(os.urandom(4), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", 68))
        sock.settimeout(UDP_TIMEOUT)
        for _ in range(TRIES):
            sock.sendto(packets.dhcp_discover(xid, mac), ("255.255.255.255", 67))
            deadline = time.monotonic() + UDP_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    break
                offered = packets.dhcp_offer(data, xid)
                if offered:
                    return {"reached": True, "detail": f"offered {offered}"}
    return {"reached": False, "detail": f"no DHCP offer in {TRIES} tries"}


def run_checks(spec: dict[str, Any]) -> dict[str, dict[str, object]]:
    seen: dict[str, dict[str, object]] = {}
    offer = None
    if spec.get("dhcp"):
        # Beside the other checks: dnsmasq holds a new client's first offer about 3 s while it
        # pings the address it means to offer, and the probe's MAC is new to each network.
        offer = Background(dhcp, spec["peer"], spec["mac"])
    if spec.get("gateway"):
        seen["gateway"] = gateway(spec["gateway"])
    address, port = spec.get("target"), spec.get("port")
    if address:  # none: the host has no default route, so there is no outside to try
        seen["outside"] = connect(address, port) if port else ping(address)
    if spec.get("dns_name"):
        seen["dns"] = dns(spec["gateway"], spec["dns_name"], spec.get("dns_address"))
    if offer is not None:
        seen["dhcp"] = offer.result()
    return seen


class Background:
    """One check on a thread of its own; result() waits for it (a failure is its answer)."""

    def __init__(self, check: Callable[..., dict[str, object]], *args: Any) -> None:
        self._answer: dict[str, object] = {"reached": False, "detail": "the check did not end"}
        self._thread = threading.Thread(target=self._run, args=(check, args), daemon=True)
        self._thread.start()

    def _run(self, check: Callable[..., dict[str, object]], args: tuple[Any, ...]) -> None:
        try:
            self._answer = check(*args)
        except OSError as exc:
            self._answer = {"reached": False, "detail": f"{check.__name__}: {exc.strerror}"}

    def result(self) -> dict[str, object]:
        self._thread.join()
        return self._answer


def main() -> None:
    leave_host_namespace()
    print("ready", flush=True)
    spec = json.loads(sys.stdin.readline())
    configure(spec)
    print(json.dumps(run_checks(spec)), flush=True)
