"""Input rules shared by `check` in the provider and by the host agent, which checks again.

Each function returns the normalised value or raises InvalidInput naming the rule. Pure
standard library: the provider imports this without pyroute2 or iptc installed.
"""

from __future__ import annotations

import ipaddress
import re

from .family import IPV4, Family

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
OWNER_RE = re.compile(r"^[A-Za-z0-9_.:/@+=-]{1,200}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# What a port forward or a forward rule may carry.
PROTOCOLS = ("tcp", "udp")
PORT_MIN, PORT_MAX = 1, 65535
# A port forward's DNAT rule as the agent reads it back (`dst_type`) and PortForward checks it:
# only packets to the host's own addresses (iptables addrtype LOCAL, nftables fib type local).
DNAT_DST_LOCAL = "local"
MTU_MIN, MTU_MAX = 68, 65535


class InvalidInput(ValueError):
    pass


def ifname(value: object) -> str:
    if not isinstance(value, str) or not IFNAME_RE.fullmatch(value) or value in (".", ".."):
        raise InvalidInput(
            f"must be an interface name of 1-15 characters from [A-Za-z0-9_.-], got {value!r}"
        )
    return value


def mtu(value: object) -> int:
    return int_range(value, MTU_MIN, MTU_MAX)


def interface_address(value: object) -> str:
    """An address with its prefix, as put on an interface (host bits allowed and needed)."""
    if not isinstance(value, str) or "/" not in value:
        raise InvalidInput(f"must be an address with a prefix such as 10.0.1.254/24, got {value!r}")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError as exc:
        raise InvalidInput(f"is not a valid address/prefix: {exc}") from None
    if (
        iface.ip == iface.network.network_address
        and iface.network.prefixlen < iface.max_prefixlen - 1
    ):
        raise InvalidInput(f"{value} is the network address itself; use a host address")
    return str(iface)


# A network shorter than this would take over much of the address space (a /0 the default
# route itself): a bridge's network, or a model's subnet, is never one.
MIN_NETWORK_PREFIX = 8


def bridge_address(value: object) -> str:
    """A bridge's address: interface_address, with a network of at least /MIN_NETWORK_PREFIX."""
    address = interface_address(value)
    prefixlen = ipaddress.ip_interface(address).network.prefixlen
    if prefixlen < MIN_NETWORK_PREFIX:
        raise InvalidInput(
            f"{address}: a bridge's network must be /{MIN_NETWORK_PREFIX} or longer (a "
            f"/{prefixlen} would capture much of the host's traffic, a /0 its default route)"
        )
    return address


def network(value: object, family: Family = IPV4) -> str:
    """A network of `family` in CIDR form with no host bits set (10.0.1.0/24, not 10.0.1.5/24)."""
    if not isinstance(value, str) or "/" not in value:
        raise InvalidInput(
            f"must be a network in CIDR form such as {family.example_network}, got {value!r}"
        )
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(value, strict=False)
            raise InvalidInput(f"has host bits set: {value} (the network is {loose})") from None
        raise InvalidInput(f"is not a valid CIDR: {exc}") from None
    if net.version != family.version:
        raise InvalidInput(f"must be an {family.label} network, got {value}")
    return str(net)


def address(value: object, family: Family = IPV4) -> str:
    """A plain address of `family` written the canonical way: it goes on kernel command lines
    and into dnsmasq's files, so anything else (a space, a prefix, a leading zero) is refused,
    not interpreted."""
    try:
        parsed = ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        parsed = None
    if not isinstance(parsed, family.address_class) or str(parsed) != value:
        raise InvalidInput(
            f"must be an {family.label} address such as {family.example_address}, got {value!r}"
        )
    return value


def ipv4_address(value: object) -> str:
    """address() of IPv4: a rule for the fields that hold only an IPv4 address."""
    return address(value, IPV4)


def protocol(value: object) -> str:
    if value not in PROTOCOLS:
        raise InvalidInput(f"must be {' or '.join(PROTOCOLS)}, got {value!r}")
    return str(value)


def port(value: object) -> int:
    return int_range(value, PORT_MIN, PORT_MAX)


def mac(value: object) -> str:
    if not isinstance(value, str) or not MAC_RE.fullmatch(value.lower()):
        raise InvalidInput(f"must be a MAC address such as 52:54:00:12:34:56, got {value!r}")
    first = int(value[:2], 16)
    if first & 1:
        raise InvalidInput(f"{value} is a multicast address; a NIC needs a unicast MAC")
    return value.lower()


def owner(value: object) -> str:
    if not isinstance(value, str) or not OWNER_RE.fullmatch(value):
        raise InvalidInput(f"must be 1-200 characters from [A-Za-z0-9_.:/@+=-], got {value!r}")
    return value


def user_name(value: object) -> str:
    if not isinstance(value, str) or not USER_RE.fullmatch(value):
        raise InvalidInput(f"must be a POSIX user name, got {value!r}")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"must be true or false, got {value!r}")
    return value


def int_range(value: object, low: int, high: int) -> int:
    """A whole number from `low` to `high`; Pulumi sends whole numbers as floats (1.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise InvalidInput(f"must be between {low} and {high}, got {value}")
    return value
