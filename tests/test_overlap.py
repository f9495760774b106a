"""The rule that keeps a bridge's network from capturing the host's traffic (agent/links/
overlap.py), as a pure function of one reading of the host, and its preview-time half."""

from __future__ import annotations

import socket

import pytest

from kvmnet_provider.agent.links.overlap import HostNetworks, clash
from kvmnet_provider.agent.links.rtdump import LinkRecord, RouteRecord
from kvmnet_provider.agent.ssh_session import connection_of
from kvmnet_provider.spec import validate


def link(index: int, name: str, alias: str = "") -> LinkRecord:
    return LinkRecord(index, name, 0, None, 1500, 0, alias, "bridge")


def route(
    dst: str, oif: int, gateway: str | None = None, table: int = 254, rtype: int = 1
) -> RouteRecord:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    return RouteRecord(family, dst, table, 3, 0, rtype, 0, oif, gateway, None, None, None)


LINKS = {
    1: link(1, "lo"),
    2: link(2, "eth0"),
    3: link(3, "wg0"),
    5: link(5, "br-a", "kvmnet:alpha/dev/Bridge/br"),
    7: link(7, "br-b", "kvmnet:beta/dev/Bridge/br"),
}
ADDRESSES = {
    1: ["127.0.0.1/8", "::1/128"],
    2: ["10.0.0.2/24", "2001:db8::2/64"],
    5: ["10.0.1.254/24"],
    7: ["10.0.2.1/24"],
}
ROUTES = [
    route("default", 2, "10.0.0.1"),
    route("0.0.0.0/1", 3),  # a VPN's split default: every network lies inside it
    route("10.0.0.0/24", 2),
    route("172.20.0.0/16", 2, "10.0.0.254"),
    route("192.168.50.0/24", 3, table=100),  # policy routing: another table
    route("192.168.60.0/24", 0, rtype=6),  # a blackhole carries nothing
    route("10.0.2.0/24", 7),
    route("2001:db8::/64", 2),
    route("fe80::/64", 2),
]
HOST = HostNetworks(LINKS, ADDRESSES, ROUTES)


def test_an_equal_network_on_another_link_keeps_its_message() -> None:
    assert clash(["10.0.1.1/24"], 7, HOST) == (
        "10.0.1.1/24: network 10.0.1.0/24 is already on br-a (10.0.1.254/24, kvmnet resource "
        "alpha/dev/Bridge/br); two links with one network split its traffic: "
        "give this bridge its own subnet"
    )


@pytest.mark.parametrize(
    "address, names",
    [
        ("10.0.0.1/26", "overlaps 10.0.0.0/24 of eth0 (10.0.0.2/24)"),  # inside the LAN
        ("10.0.0.1/16", "overlaps 10.0.0.0/24 of eth0 (10.0.0.2/24)"),  # around it
        ("10.0.1.9/25", "overlaps 10.0.1.0/24 of br-a (10.0.1.254/24, kvmnet resource alpha/"),
        ("127.1.0.1/16", "overlaps 127.0.0.0/8 of lo"),
        ("172.20.5.1/24", "the host's route 172.20.0.0/16 via 10.0.0.254 dev eth0"),
        ("172.16.0.1/12", "the host's route 172.20.0.0/16 via 10.0.0.254 dev eth0"),
        ("192.168.50.1/28", "route 192.168.50.0/24 dev wg0 table 100"),
        ("2001:db8::1:1/112", "overlaps 2001:db8::/64 of eth0"),
    ],
)
def test_a_network_overlapping_the_hosts_is_refused_naming_what_it_overlaps(
    address: str, names: str
) -> None:
    found = clash([address], None, HOST)
    assert found is not None and found.startswith(f"{address}: network ")
    assert names in found, found
    assert "give this bridge a subnet apart from the host's" in found or "own subnet" in found


@pytest.mark.parametrize(
    "address",
    [
        "10.0.2.254/24",  # the bridge's own network (an update): its address and route
        "10.0.3.1/24",  # beside everything
        "192.168.60.1/24",  # inside a blackhole only
        "100.64.0.1/24",  # inside only the default route and a VPN's /1
        "fd00::1/64",
    ],
)
def test_a_network_apart_from_the_hosts_passes(address: str) -> None:
    assert clash([address], 7, HOST) is None


def test_a_network_containing_the_sessions_address_is_refused_first() -> None:
    found = clash(["100.64.0.1/24"], None, HOST, ["100.64.0.77"])
    assert found is not None
    assert "contains 100.64.0.77, the address kvmnet's SSH session comes from" in found
    assert clash(["100.64.0.1/24"], None, HOST, ["100.64.1.77"]) is None
    assert clash(["fd00::1/64"], None, HOST, ["100.64.0.77"]) is None  # another family


def test_every_added_address_is_checked() -> None:
    found = clash(["10.0.3.1/24", "10.0.0.9/25"], 7, HOST)
    assert found is not None and found.startswith("10.0.0.9/25: ")


def test_the_session_address_is_read_from_ssh_connection() -> None:
    def peers(value: str | None) -> set[str]:
        env = {} if value is None else {"SSH_CONNECTION": value}
        return {c.peer for c in connection_of(env)}

    assert peers("10.0.0.1 50022 10.0.0.2 22") == {"10.0.0.1"}
    assert peers("fe80::1%eth0 50022 fe80::2 22") == {"fe80::1"}
    assert peers("garbage") == set() and peers(None) == set()


@pytest.mark.parametrize("address", ["10.0.0.1/7", "0.0.0.1/0", "10.0.0.1/1", "2001:db8::1/7"])
def test_a_bridge_network_shorter_than_a_slash_8_is_refused(address: str) -> None:
    with pytest.raises(validate.InvalidInput, match="must be /8 or longer"):
        validate.bridge_address(address)
    assert validate.bridge_address("10.0.0.1/8") == "10.0.0.1/8"


def test_a_models_subnet_shorter_than_a_slash_8_is_refused_at_preview() -> None:
    from kvmnet_provider.errors import ConfigError
    from kvmnet_provider.models.addresses import subnet_and_gateway

    with pytest.raises(ConfigError) as refused:
        subnet_and_gateway("10.0.0.0/7", "10.0.0.1", "net.")
    assert refused.value.key == "net.subnet"
    assert "must be /8 or longer" in str(refused.value)
    assert str(subnet_and_gateway("10.0.0.0/8", "10.0.0.1")[0]) == "10.0.0.0/8"
