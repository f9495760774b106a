"""The verify probe's MAC and address on a network, shared by the probe and by the network's
DHCP server, which reserves that address for that MAC.

dnsmasq pings an address from its range before it offers it to a new client, and holds the
offer meanwhile (about 3 s); a reserved address is offered at once. The probe is new to the
network at every `up` that verifies it, so without the reservation its DHCP check waited those
3 s each time. The address is outside the range and no guest's, so the reservation takes
nothing a guest could have. Pure standard library.
"""

from __future__ import annotations

import hashlib
import ipaddress


def probe_mac(bridge: str) -> str:
    """A locally administered unicast MAC (02:...), one per bridge of a host."""
    raw = bytes.fromhex(hashlib.sha256(f"kvmnet-probe/{bridge}".encode()).hexdigest()[:10])
    return ":".join(f"{b:02x}" for b in (0x02, *raw))


def probe_address(subnet: str, taken: list[str], dhcp_range: list[str] | None) -> str:
    """The highest host address of `subnet` that no guest, gateway or DHCP range uses."""
    net = ipaddress.IPv4Network(subnet)
    used = {ipaddress.IPv4Address(a) for a in taken}
    low = high = None
    if dhcp_range:
        low, high = (ipaddress.IPv4Address(a) for a in dhcp_range)
    hosts = list(net.hosts()) if net.prefixlen < 31 else list(net)
    for candidate in reversed(hosts):
        if candidate in used or (low is not None and high is not None and low <= candidate <= high):
            continue
        return str(candidate)
    raise ValueError(f"no free address in {subnet} for the probe")


def reservation(
    bridge: str, subnet: str, gateway: str, addresses: list[str], dhcp_range: list[str]
) -> tuple[str, str] | None:
    """The probe's (MAC, address) on a DHCP network: None when the subnet has no room."""
    try:
        return probe_mac(bridge), probe_address(subnet, [*addresses, gateway], dhcp_range)
    except ValueError:
        return None
