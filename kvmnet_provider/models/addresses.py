"""Rules that span a network's guests, checked when the model is declared (so at preview).

A guest's declared address ends up on its kernel command line, where no resource's `check`
sees it in the context of the subnet and the other guests. So here: each address is a
plain IPv4 address inside the subnet, not its network, broadcast or gateway address, and
unique in the network; taps and MACs are well formed (that they and the guests' names are
unique per host is collisions.py's, which sees every network on the host). With DHCP
(check_dhcp): the domain is a DNS name, the range lies in the subnet without the gateway,
every static address lies outside the range, and every guest name is a DNS label (its
hostname). Failures name the network, the guest and the property.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import ConfigError, config_path
from ..spec import dhcp
from ..spec.family import IPV4, Family, IPAddress, IPNetwork
from ..spec.validate import MIN_NETWORK_PREFIX, InvalidInput, ifname, mac
from ..spec.validate import address as plain_address


class _Guest(Protocol):
    name: str
    tap: str
    mac: str
    address: str | None


def subnet_and_gateway(
    subnet: object, gateway: object, where: str = "", family: Family = IPV4
) -> tuple[IPNetwork, IPAddress | None]:
    """The subnet (no host bits) and the gateway inside it, or ConfigError naming which."""
    try:
        net = ipaddress.ip_network(str(subnet), strict=True)
    except ValueError as exc:
        raise ConfigError(
            f"{where}subnet", f"{subnet!r} is not an {family.label} network: {exc}"
        ) from None
    if not isinstance(net, family.network_class) or not isinstance(subnet, str):
        raise ConfigError(
            f"{where}subnet",
            f"must be an {family.label} network such as {family.example_network}, got {subnet!r}",
        )
    if net.prefixlen < MIN_NETWORK_PREFIX:
        raise ConfigError(
            f"{where}subnet",
            f"{net}: a network's subnet must be /{MIN_NETWORK_PREFIX} or longer (a "
            f"/{net.prefixlen} would capture much of the host's traffic, a /0 its default route)",
        )
    if gateway is None:
        return net, None
    gw = _address(gateway, f"{where}gateway", family)
    if gw not in net:
        raise ConfigError(f"{where}gateway", f"{gw} is not inside subnet {net}")
    if net.prefixlen < 31 and gw in (net.network_address, net.broadcast_address):
        raise ConfigError(f"{where}gateway", f"{gw} is the network or broadcast address of {net}")
    return net, gw


def check_guests(
    where: str,
    subnet: object,
    gateway: object,
    guests: Sequence[_Guest],
    config_key: str | None = None,
    family: Family = IPV4,
) -> None:
    """All the rules above for one network but DHCP's."""
    net, gw = subnet_and_gateway(subnet, gateway, prefix(where, config_key), family)
    seen: dict[IPAddress, str] = {}
    for index, guest in enumerate(guests):
        who = guest_key(where, config_key, index, guest.name)
        if guest.address is not None:
            address = _address(guest.address, f"{who}.address", family)
            if address not in net:
                raise ConfigError(f"{who}.address", f"{address} is not inside subnet {net}")
            if net.prefixlen < 31 and address == net.network_address:
                raise ConfigError(f"{who}.address", f"{address} is the network address of {net}")
            if net.prefixlen < 31 and address == net.broadcast_address:
                raise ConfigError(f"{who}.address", f"{address} is the broadcast address of {net}")
            if address == gw:
                raise ConfigError(
                    f"{who}.address", f"{address} is the gateway (the bridge's address)"
                )
            if address in seen:
                raise ConfigError(
                    f"{who}.address", f"{address} is already {seen[address]}'s address"
                )
            seen[address] = guest.name
        valid(ifname, guest.tap, f"{who}.tap")
        valid(mac, guest.mac, f"{who}.mac")


class _DhcpNetwork(Protocol):
    subnet: str
    gateway: str | None
    domain: str
    dhcp_range: Any
    guests: Sequence[Any]


def check_dhcp(where: str, args: _DhcpNetwork, config_key: str | None = None) -> list[str]:
    """The DHCP rules above for a network whose addresses check_guests has passed; returns
    the dynamic range (the default one when none is given)."""
    at = prefix(where, config_key)
    valid(dhcp.domain, args.domain, f"{at}domain")
    subnet, gateway = str(args.subnet), args.gateway
    if ipaddress.IPv4Network(subnet).prefixlen > 30:
        raise ConfigError(f"{at}subnet", f"{subnet} is too small for DHCP (at most /30)")
    range_key = f"{at}dhcpRange" if config_key else f"{at}dhcp_range"
    if args.dhcp_range is None:
        rng = dhcp.default_range(subnet, gateway)
    else:
        rng = valid(dhcp.dhcp_range, args.dhcp_range, range_key)
        problems = dhcp.range_problems(subnet, gateway, rng)
        if problems:
            raise ConfigError(range_key, problems[0])
    for index, guest in enumerate(args.guests):
        who = guest_key(where, config_key, index, guest.name)
        valid(dhcp.hostname, guest.name, f"{who}.name")
        if guest.address is not None:
            problem = dhcp.address_problem(subnet, gateway, rng, guest.address)
            if problem:
                raise ConfigError(f"{who}.address", problem)
    return list(rng)


def forward_address(
    where: str, config_key: str | None, index: int, guest: str, guests: Sequence[_Guest]
) -> str:
    """The address the `index`th port forward (to `guest`) goes to; a guest that is not the
    network's, or has no fixed address to forward to, fails naming the forward."""
    key = f"{forward_key(where, config_key, index)}.guest"
    by_name = {g.name: g.address for g in guests}
    if guest not in by_name:
        with_address = ", ".join(n for n, a in by_name.items() if a) or "none"
        raise ConfigError(
            key,
            f"{guest!r} is not a guest of this network (guests with an address: {with_address})",
        )
    address = by_name[guest]
    if not address:
        raise ConfigError(
            key,
            f"guest {guest!r} has no address: a port forward goes to a fixed address; give the "
            "guest one (GuestSpec.address, or its `address` in stack config)",
        )
    return str(address)


def prefix(where: str, config_key: str | None) -> str:
    """What a network's property names start with in errors: its stack-config path when it
    was read from stack config (`kvmnet:hosts.h1.networks[0].`, `kvmnet:`), else its resource
    name (`net: `)."""
    return config_path(config_key, "") if config_key else f"{where}: "


def forward_key(where: str, config_key: str | None, index: int) -> str:
    """How errors name a network's port forward: `kvmnet:portForwards[0]`, or
    `net: port_forwards[0]`."""
    name = "portForwards" if config_key else "port_forwards"
    return f"{prefix(where, config_key)}{name}[{index}]"


def guest_key(where: str, config_key: str | None, index: int, name: str) -> str:
    """How errors name a network's guest: `kvmnet:guests[1]`, or `net: guests[1] (g2)`."""
    if config_key:
        return config_path(config_key, f"guests[{index}]")
    return f"{where}: guests[{index}] ({name})"


def valid(rule: Any, value: object, key: str) -> Any:
    """`rule(value)`; its InvalidInput as a ConfigError naming `key` (a config path or a
    network's property)."""
    try:
        result = rule(value)
    except InvalidInput as exc:
        raise ConfigError(key, str(exc)) from None
    return result


def _address(value: object, key: str, family: Family = IPV4) -> IPAddress:
    return family.address(valid(lambda v: plain_address(v, family), value, key))
