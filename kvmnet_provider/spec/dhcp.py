"""A network's DHCP/DNS server (dnsmasq): the rules of its spec, shared by the provider's
`check` and the host agent, which checks again. Pure standard library.

Every value that ends up in dnsmasq's config or hosts files is validated to a narrow form
here (DNS labels, canonical IPv4 addresses, lowercase MACs), so none can carry a newline, a
comma or an option of its own into those files.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from . import validate
from .validate import InvalidInput

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_DOMAIN = "kvm.internal"
LEASE_SECONDS = 3600


def domain(value: object) -> str:
    """A DNS domain (RFC 1123 labels, lowercase, at most 253 characters)."""
    if not isinstance(value, str) or not value or len(value) > 253:
        raise InvalidInput(f"must be a DNS domain such as kvm.internal, got {value!r}")
    labels = value.lower().split(".")
    if not all(LABEL_RE.fullmatch(label) for label in labels):
        raise InvalidInput(
            f"must be a DNS domain of labels [a-z0-9-] (1-63 characters, no leading or "
            f"trailing '-') joined by '.', got {value!r}"
        )
    return ".".join(labels)


def hostname(value: object) -> str:
    """A guest's name as a DNS label (its hostname in DHCP and in DNS)."""
    if not isinstance(value, str) or not LABEL_RE.fullmatch(value.lower()):
        raise InvalidInput(
            f"must be a DNS label (1-63 of [a-z0-9-], no leading or trailing '-') to be a "
            f"hostname, got {value!r}"
        )
    return value.lower()


def address(value: object) -> str:
    return validate.ipv4_address(value)


def dhcp_range(value: object) -> list[str]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InvalidInput(f"must be [start, end] (two IPv4 addresses), got {value!r}")
    start, end = address(value[0]), address(value[1])
    if ipaddress.IPv4Address(start) > ipaddress.IPv4Address(end):
        raise InvalidInput(f"start {start} is after end {end}")
    return [start, end]


def host(value: object) -> dict[str, Any]:
    """One declared guest: {name, mac, address?} (no address: it gets one from the range)."""
    if not isinstance(value, dict) or set(value) - {"name", "mac", "address"}:
        raise InvalidInput(f"each item must be {{name, mac, address?}}, got {value!r}")
    found = value.get("address")
    return {
        "name": hostname(value.get("name")),
        "mac": validate.mac(value.get("mac")),
        "address": None if found is None else address(found),
    }


def hosts(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, (list, tuple)):
        raise InvalidInput(f"must be a list, got {value!r}")
    items = [host(v) for v in value]
    return sorted(items, key=lambda h: h["name"])


def default_range(subnet: str, gateway: str | None) -> list[str]:
    """The upper half of the subnet's host addresses, minus the gateway (/24: .128-.254)."""
    net = ipaddress.IPv4Network(subnet)
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    if net.prefixlen >= 31:
        first, last = int(net.network_address), int(net.broadcast_address)
    start, end = first + (last - first + 1) // 2, last
    gw = int(ipaddress.IPv4Address(gateway)) if gateway else None
    if gw == end and end > start:
        end -= 1
    elif gw == start and start < end:
        start += 1
    return [str(ipaddress.IPv4Address(start)), str(ipaddress.IPv4Address(end))]


def range_problems(subnet: str, gateway: str | None, rng: list[str]) -> list[str]:
    """Why [start, end] cannot be the dynamic range of `subnet` (empty when it can)."""
    net = ipaddress.IPv4Network(subnet)
    start, end = (ipaddress.IPv4Address(a) for a in rng)
    problems = []
    for which, a in (("start", start), ("end", end)):
        if a not in net:
            problems.append(f"{which} {a} is not inside subnet {net}")
        elif net.prefixlen < 31 and a in (net.network_address, net.broadcast_address):
            problems.append(f"{which} {a} is the network or broadcast address of {net}")
    if gateway and start <= ipaddress.IPv4Address(gateway) <= end:
        problems.append(f"contains the gateway {gateway} (the bridge's address)")
    return problems


def address_problem(subnet: str, gateway: str | None, rng: list[str], addr: str) -> str | None:
    """Why `addr` cannot be a guest's static lease on this network (None when it can)."""
    net = ipaddress.IPv4Network(subnet)
    a = ipaddress.IPv4Address(addr)
    if a not in net:
        return f"{a} is not inside subnet {net}"
    if net.prefixlen < 31 and a == net.network_address:
        return f"{a} is the network address of {net}"
    if net.prefixlen < 31 and a == net.broadcast_address:
        return f"{a} is the broadcast address of {net}"
    if gateway and a == ipaddress.IPv4Address(gateway):
        return f"{a} is the gateway (the bridge's address)"
    start, end = (ipaddress.IPv4Address(x) for x in rng)
    if start <= a <= end:
        return f"{a} is inside the DHCP range {start}-{end} (static leases go outside it)"
    return None


def cross_check(props: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules between fields: (property, reason) pairs."""
    subnet, gateway, rng = props["subnet"], props["gateway"], props.get("dhcp_range")
    failures: list[tuple[str, str]] = []
    if ipaddress.IPv4Address(gateway) not in ipaddress.IPv4Network(subnet):
        return [("gateway", f"{gateway} is not inside subnet {subnet}")]
    if rng is None:
        rng = default_range(subnet, gateway)
    failures += [("dhcp_range", p) for p in range_problems(subnet, gateway, rng)]
    if failures:
        return failures
    seen: dict[str, dict[str, str]] = {"mac": {}, "address": {}, "name": {}}
    for index, item in enumerate(props.get("hosts") or []):
        where = f"hosts[{index}] ({item['name']})"
        if item["address"] is not None:
            problem = address_problem(subnet, gateway, rng, item["address"])
            if problem:
                failures.append((f"{where}.address", problem))
        for key in ("mac", "address", "name"):
            value = item[key]
            if value is None:
                continue
            if value in seen[key]:
                failures.append((f"{where}.{key}", f"{value} is already {seen[key][value]}'s"))
            seen[key][value] = item["name"]
    return failures


def normalise_spec(args: dict[str, Any]) -> dict[str, Any]:
    """The agent's own check of a dhcp.start request."""
    spec: dict[str, Any] = {
        "owner": validate.owner(args.get("owner")),
        "bridge": validate.ifname(args.get("bridge")),
        "subnet": validate.network(args.get("subnet")),
        "gateway": address(args.get("gateway")),
        "domain": domain(args.get("domain") or DEFAULT_DOMAIN),
        "dhcp_range": None if args.get("dhcp_range") is None else dhcp_range(args["dhcp_range"]),
        "hosts": hosts(args.get("hosts") or []),
    }
    if ipaddress.IPv4Network(spec["subnet"]).prefixlen > 30:
        raise InvalidInput(f"subnet {spec['subnet']} is too small for DHCP (at most /30)")
    failures = cross_check(spec)
    if failures:
        raise InvalidInput("; ".join(f"{p} {r}" for p, r in failures))
    if spec["dhcp_range"] is None:
        spec["dhcp_range"] = default_range(spec["subnet"], spec["gateway"])
    return spec
