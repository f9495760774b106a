"""An address family, described once: what every layer that writes an address, a rule, a
dnsmasq line or a sysctl needs to know about IPv4 or IPv6.

Functions that handle addresses take a `family` defaulting to IPV4; passing IPV6 is how
IPv6 support adds itself without an edit of each of them. Pure standard library.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Family:
    name: str  # "ipv4": the key in forwarding's host state, and the sysctl directory
    label: str  # "IPv4", for messages
    version: int
    network_class: type[ipaddress.IPv4Network] | type[ipaddress.IPv6Network]
    address_class: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]
    host_prefix: int  # a single address as a network: /32, /128
    host_mask: str  # the same as python-iptables' rules take it
    any_address: str  # the unspecified address: 0.0.0.0, ::
    nft: str  # nftables' table family and payload protocol: ip, ip6
    iptc_table: str  # python-iptables' table and rule classes: Table/Rule, Table6/Rule6
    iptc_rule: str
    iptables_names: str  # the legacy tables the kernel has loaded
    forward_sysctl: str
    netlink: int  # the address family number in netlink messages
    example_network: str
    example_address: str
    dhcp_server_port: int
    # A DHCP request before the guest has an address: from where, to where.
    dhcp_request_src: str
    dhcp_request_dst: str
    # Destinations the masquerade leaves alone (RETURN before it), as libvirt's do: the
    # local multicast block and the limited broadcast never leave the link, and rewriting
    # the source of the host's own broadcasts (dnsmasq's DHCP replies) breaks them.
    nat_exempt: tuple[str, ...] = ()

    def network(self, value: str, strict: bool = True) -> IPNetwork:
        return self.network_class(value, strict=strict)

    def address(self, value: str) -> IPAddress:
        return self.address_class(value)

    def host(self, address: object) -> str:
        """One address as a network: `10.0.1.11/32`."""
        return f"{address}/{self.host_prefix}"

    def endpoint(self, address: object, port: int) -> str:
        """An address and port as iptables' DNAT target writes it: `10.0.1.11:22`,
        `[fd00::11]:22`."""
        return f"{address}:{port}" if self.version == 4 else f"[{address}]:{port}"

    def any_network(self) -> str:
        return f"{self.any_address}/0"

    def dhcp_mask(self, subnet: str) -> str:
        """The mask field of dnsmasq's dhcp-range: a netmask for IPv4, a prefix length for
        IPv6 (dnsmasq's own syntax for each)."""
        net = self.network(subnet)
        return str(net.netmask) if self.version == 4 else str(net.prefixlen)


IPV4 = Family(
    name="ipv4",
    label="IPv4",
    version=4,
    network_class=ipaddress.IPv4Network,
    address_class=ipaddress.IPv4Address,
    host_prefix=32,
    host_mask="255.255.255.255",
    any_address="0.0.0.0",
    nft="ip",
    iptc_table="Table",
    iptc_rule="Rule",
    iptables_names="/proc/net/ip_tables_names",
    forward_sysctl="/proc/sys/net/ipv4/ip_forward",
    netlink=socket.AF_INET,
    example_network="10.0.1.0/24",
    example_address="10.0.1.11",
    dhcp_server_port=67,
    dhcp_request_src="0.0.0.0/32",
    dhcp_request_dst="255.255.255.255/32",
    nat_exempt=("224.0.0.0/24", "255.255.255.255/32"),
)

IPV6 = Family(
    name="ipv6",
    label="IPv6",
    version=6,
    network_class=ipaddress.IPv6Network,
    address_class=ipaddress.IPv6Address,
    host_prefix=128,
    host_mask="128",
    any_address="::",
    nft="ip6",
    iptc_table="Table6",
    iptc_rule="Rule6",
    iptables_names="/proc/net/ip6_tables_names",
    forward_sysctl="/proc/sys/net/ipv6/conf/all/forwarding",
    netlink=socket.AF_INET6,
    example_network="fd00:0:0:1::/64",
    example_address="fd00:0:0:1::11",
    dhcp_server_port=547,
    dhcp_request_src="fe80::/10",  # DHCPv6 clients send from their link-local address
    dhcp_request_dst="ff02::1:2/128",  # to All_DHCP_Relay_Agents_and_Servers
)

FAMILIES = (IPV4, IPV6)
BY_NAME = {f.name: f for f in FAMILIES}


def of(value: str) -> Family:
    """The family of an address or network as written (`10.0.1.0/24`, `fd00::1`)."""
    return IPV6 if ":" in value else IPV4
