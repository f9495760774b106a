"""A lab host's NIC re-laid the way real hosts have it, for the bridged model's takeover tests.

A lab host's eth0 is plain: its address as a /24 of the LAN, `default via` the switch. Hosts
people rent are laid out otherwise, and the takeover must carry each layout to the bridge and
back exactly:

- slash32:  the address as a /32, `GW dev eth0 scope link`, `default via GW` (GW: the
            switch's address, which then routes between the LAN's hosts and the operator);
- onlink:   the /24 and a default route through a gateway outside it, declared `onlink`;
- several:  three addresses (two on the LAN, the primary not the one SSH uses; one in
            another subnet) and a route through a gateway of the other subnet;
- ipv6:     two ULA /64 addresses besides the /24 and `default via fe80::1` (the switch
            answers fe80::1).

Besides those, `bridge` (not in LAYOUTS: eth0 is no NIC a takeover may take there) puts the
host's address and default route on a bridge made by hand, `br-mgmt` with eth0's MAC and eth0
as its port, as a host whose network config bridges its NIC for its VMs: the adopt tests.

`relaid(lab, status, "h2", "slash32")` is a context manager: the layout inside, the lab's own
after, whatever happened. Only the lab's namespaces are touched: the operator's root-namespace
veth keeps its /24 and reaches the host on-link; the host answers through its gateway.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections.abc import Iterator
from typing import Any

from .core import Lab
from .naming import LabNames
from .state import LabStatus

LAYOUTS = ("slash32", "onlink", "several", "ipv6")
NIC = "eth0"
MGMT_BRIDGE = "br-mgmt"  # the `bridge` layout's bridge, which carries the host's address
ONLINK_GATEWAY = "100.64.0.1"  # outside every lab LAN: reachable only because it is on-link
ROUTER_LINK_LOCAL = "fe80::1"


def ula(status: LabStatus, last: int) -> str:
    """The lab LAN's IPv6 twin: fd00:198:18:<octet>::<last>."""
    octet = int(ipaddress.ip_network(status.lan).network_address.packed[2])
    return f"fd00:198:18:{octet}::{last:x}"


def other_subnet(status: LabStatus) -> ipaddress.IPv4Network:
    """A subnet of the lab's supernet no lab LAN uses (those are 198.18.x.0/24)."""
    octet = int(ipaddress.ip_network(status.lan).network_address.packed[2])
    return ipaddress.IPv4Network(f"198.19.{octet}.0/24")


def _ip(lab: Lab, ns: str, *args: str, check: bool = True) -> str:
    proc = lab.exec_in(ns, ["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} in {ns}: {proc.stderr.strip()}")
    return str(proc.stdout)


def _sysctl(lab: Lab, ns: str, key: str, value: str) -> None:
    lab.exec_in(ns, ["sysctl", "-q", "-w", f"{key}={value}"], check=True, timeout=30)


def _host_address(status: LabStatus, host: str) -> str:
    return status.host(host).address


def _plain(lab: Lab, ns: str) -> None:
    """eth0 bare: no IPv4 address, no global IPv6 address, no route of anyone's."""
    _ip(lab, ns, "-4", "addr", "flush", "dev", NIC)
    _ip(lab, ns, "-6", "addr", "flush", "dev", NIC, "scope", "global")
    _ip(lab, ns, "-4", "route", "flush", "dev", NIC, check=False)
    _ip(lab, ns, "-6", "route", "flush", "dev", NIC, "proto", "boot", check=False)
    _ip(lab, ns, "-6", "route", "flush", "dev", NIC, "proto", "static", check=False)


def _switch(lab: Lab, status: LabStatus, routing: bool) -> None:
    """The switch as the LAN's router (slash32, onlink, ipv6) or as the lab makes it."""
    sw, br = lab.names.switch_ns, LabNames.bridge
    _sysctl(lab, sw, "net.ipv4.ip_forward", "1" if routing else "0")
    # Hosts of one LAN reach each other directly: no redirect may teach them otherwise.
    _sysctl(lab, sw, "net.ipv4.conf.all.send_redirects", "0")
    _sysctl(lab, sw, f"net.ipv4.conf.{br}.send_redirects", "0")
    verb = "replace" if routing else "del"
    _ip(lab, sw, "addr", verb, f"{ONLINK_GATEWAY}/32", "dev", br, check=routing)
    _ip(lab, sw, "-6", "addr", verb, f"{ROUTER_LINK_LOCAL}/64", "dev", br, "nodad", check=routing)
    _ip(lab, sw, "-6", "addr", verb, f"{ula(status, 0xFE)}/64", "dev", br, "nodad", check=routing)


def lay(lab: Lab, status: LabStatus, host: str, layout: str) -> None:
    """Give `host`'s eth0 one of LAYOUTS, "bridge", or "lan" (the lab's own)."""
    ns, address, gw = lab.namespace(host), _host_address(status, host), status.gateway
    prefix = ipaddress.ip_network(status.lan).prefixlen
    _ip(lab, ns, "link", "del", MGMT_BRIDGE, check=False)  # eth0 is a port of none
    _plain(lab, ns)
    _switch(lab, status, routing=layout not in ("lan", "bridge"))
    if layout == "bridge":
        mac = json.loads(_ip(lab, ns, "-j", "link", "show", NIC))[0]["address"]
        _ip(lab, ns, "link", "add", MGMT_BRIDGE, "address", mac, "type", "bridge",
            "stp_state", "0", "forward_delay", "0")  # fmt: skip
        _ip(lab, ns, "link", "set", NIC, "master", MGMT_BRIDGE)
        _ip(lab, ns, "link", "set", MGMT_BRIDGE, "up")
        _ip(lab, ns, "addr", "add", f"{address}/{prefix}", "dev", MGMT_BRIDGE)
        _ip(lab, ns, "route", "add", "default", "via", gw)
        _wait_link_local(lab, ns, MGMT_BRIDGE)  # the kernel adds it once the port forwards
        return
    if layout == "slash32":
        _ip(lab, ns, "addr", "add", f"{address}/32", "dev", NIC)
        _ip(lab, ns, "route", "add", gw, "dev", NIC, "scope", "link")
        _ip(lab, ns, "route", "add", "default", "via", gw)
        return
    if layout == "several":  # a primary that does not sort first: it must stay the primary
        _ip(lab, ns, "addr", "add", f"{ipaddress.ip_address(address) + 120}/{prefix}", "dev", NIC)
    _ip(lab, ns, "addr", "add", f"{address}/{prefix}", "dev", NIC)
    if layout in ("lan", "several", "ipv6"):
        _ip(lab, ns, "route", "add", "default", "via", gw)
    if layout == "onlink":
        _ip(lab, ns, "route", "add", "default", "via", ONLINK_GATEWAY, "dev", NIC, "onlink")
    elif layout == "several":
        other = other_subnet(status)
        _ip(lab, ns, "addr", "add", f"{other.network_address + 5}/28", "dev", NIC)
        far = ipaddress.IPv4Network(f"{other.network_address + 128}/25")
        _ip(lab, ns, "route", "add", str(far), "via", str(other.network_address + 1), "metric", "7")
    elif layout == "ipv6":
        last = int(address.rsplit(".", 1)[1])
        _ip(lab, ns, "-6", "addr", "add", f"{ula(status, last)}/64", "dev", NIC)
        _ip(lab, ns, "-6", "addr", "add", f"{ula(status, last + 0x100)}/64", "dev", NIC)
        _ip(lab, ns, "-6", "route", "add", "default", "via", ROUTER_LINK_LOCAL, "dev", NIC)
    elif layout != "lan":
        raise ValueError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")
    wait_dad(lab, ns)


def wait_dad(lab: Lab, ns: str, timeout: float = 10.0) -> None:
    """Until no IPv6 address of the namespace is tentative (duplicate address detection)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found: list[dict[str, Any]] = json.loads(_ip(lab, ns, "-j", "-6", "addr") or "[]")
        tentative = [a for link in found for a in link.get("addr_info", []) if a.get("tentative")]
        if not tentative:
            return
        time.sleep(0.2)


def _wait_link_local(lab: Lab, ns: str, link: str, timeout: float = 10.0) -> None:
    """Until `link` has its IPv6 link-local address, past duplicate address detection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = json.loads(_ip(lab, ns, "-j", "-6", "addr", "show", "dev", link) or "[]")
        local = [a for x in found for a in x.get("addr_info", []) if a.get("scope") == "link"]
        if local and not any(a.get("tentative") for a in local):
            return
        time.sleep(0.2)


@contextlib.contextmanager
def relaid(lab: Lab, status: LabStatus, host: str, layout: str) -> Iterator[None]:
    lay(lab, status, host, layout)
    try:
        yield
    finally:
        lay(lab, status, host, "lan")
