"""Guest addresses, MACs, taps and names across a network and a host (pure: no engine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvmnet_provider.connection import HostSettings
from kvmnet_provider.errors import ConfigError
from kvmnet_provider.models import GuestSpec, NetworkArgs, addresses, collisions

H1 = HostSettings(host="198.18.0.2")


@pytest.fixture(autouse=True)
def fresh_claims() -> Iterator[None]:
    collisions.forget_all()
    yield
    collisions.forget_all()


def guest(i: int, address: str | None = None, **kw: str) -> GuestSpec:
    return GuestSpec(
        name=kw.get("name", f"g{i}"),
        tap=kw.get("tap", f"vif{i}.0"),
        mac=kw.get("mac", f"52:54:00:00:01:{i:02x}"),
        address=address,
    )


def rejected(guests: list[GuestSpec], gateway: str | None = "10.0.1.254") -> str:
    with pytest.raises(ConfigError) as caught:
        addresses.check_guests("net", "10.0.1.0/24", gateway, guests)
    return str(caught.value)


def test_good_guests_pass() -> None:
    addresses.check_guests(
        "net", "10.0.1.0/24", "10.0.1.254", [guest(1, "10.0.1.11"), guest(2, "10.0.1.12")]
    )
    addresses.check_guests("iso", "10.0.1.0/24", None, [guest(1)])


@pytest.mark.parametrize(
    "address, fragment",
    [
        ("10.0.1.300", "must be an IPv4 address"),
        ("10.0.1.11 init=/bin/sh", "must be an IPv4 address"),  # no extra kernel parameter
        ("10.0.1.11/24", "must be an IPv4 address"),
        ("010.0.1.11", "must be an IPv4 address"),
        ("fd00::11", "must be an IPv4 address"),
        ("10.0.2.11", "not inside subnet 10.0.1.0/24"),
        ("10.0.1.0", "network address"),
        ("10.0.1.255", "broadcast address"),
        ("10.0.1.254", "gateway"),
    ],
)
def test_bad_address_names_guest_and_property(address: str, fragment: str) -> None:
    message = rejected([guest(1, "10.0.1.11"), guest(2, address)])
    assert message.startswith("net: guests[1] (g2).address: "), message
    assert fragment in message


def test_duplicate_address_in_a_network() -> None:
    message = rejected([guest(1, "10.0.1.11"), guest(2, "10.0.1.11")])
    assert message == "net: guests[1] (g2).address: 10.0.1.11 is already g1's address"


def on(host: HostSettings, bridge: str, *guests: GuestSpec, key: str | None = None) -> NetworkArgs:
    return NetworkArgs(connection=host, bridge=bridge, guests=list(guests), config_key=key)


@pytest.mark.parametrize("prop", ["mac", "tap", "name"])
def test_mac_tap_and_name_unique_per_host_across_networks(prop: str) -> None:
    first = guest(1, "10.0.1.11")
    collisions.claim("a", on(H1, "br-a", first), host_subnet=False)
    second = guest(2, "10.0.1.12", **{prop: getattr(first, prop)})
    with pytest.raises(
        ConfigError, match=rf"^b: guests\[0\] \(.*\)\.{prop}: .* by a: guests\[0\] \(g1\)\.{prop};"
    ):
        collisions.claim("b", on(H1, "br-b", second), host_subnet=False)
    # ... while another host may use it
    collisions.claim("c", on(HostSettings(host="198.18.0.3"), "br-a", second), host_subnet=False)


@pytest.mark.parametrize(
    "prop, kind, value",
    [("mac", "MAC", "52:54:00:00:01:01"), ("tap", "tap", "vif1.0"), ("name", "guest", "g1")],
)
def test_a_stack_configs_collision_names_both_config_paths(
    prop: str, kind: str, value: str
) -> None:
    """The one-host program's network is `kvmnet:` itself: errors name the keys as typed."""
    first = guest(1, "10.0.1.11")
    # A MAC is the same MAC in capitals.
    second = guest(2, "10.0.1.12", **{prop: value.upper() if prop == "mac" else value})
    with pytest.raises(ConfigError) as caught:
        collisions.claim("net", on(H1, "br-in", first, second, key="kvmnet:"), host_subnet=True)
    assert str(caught.value) == (
        f"kvmnet:guests[1].{prop}: {kind} {value!r} is already declared on host "
        f"root@198.18.0.2:22 by kvmnet:guests[0].{prop}; names must be unique per host "
        "(rename one of them)"
    )


def test_bad_mac_and_tap_are_named() -> None:
    assert ".mac: must be a MAC" in rejected([guest(1, mac="52:54:00:zz:00:01")])
    assert ".tap: must be an interface name" in rejected([guest(1, tap="vif 1")])


@pytest.mark.parametrize(
    "subnet, gateway, fragment",
    [
        ("10.0.1.0/33", None, "net: subnet: '10.0.1.0/33' is not an IPv4 network"),
        ("10.0.1.5/24", None, "net: subnet:"),
        ("fd00::/64", None, "net: subnet: must be an IPv4 network"),
        ("10.0.1.0/24", "10.0.2.1", "net: gateway: 10.0.2.1 is not inside subnet 10.0.1.0/24"),
        ("10.0.1.0/24", "10.0.1.255", "net: gateway: 10.0.1.255 is the network or broadcast"),
        ("10.0.1.0/24", "10.0.1.1 x", "net: gateway: must be an IPv4 address"),
    ],
)
def test_subnet_and_gateway(subnet: str, gateway: str | None, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        addresses.check_guests("net", subnet, gateway, [])
    assert str(caught.value).startswith(fragment), str(caught.value)


def test_declaring_the_same_network_twice_is_not_a_clash() -> None:
    """The program may be evaluated again in one process (tests, automation)."""
    for _ in range(2):
        args = on(H1, "br-in", guest(1, "10.0.1.11"))
        addresses.check_guests("net", "10.0.1.0/24", None, args.guests)
        collisions.claim("net", args, host_subnet=True)


def test_a_port_forward_names_its_guest_problem_and_the_fix() -> None:
    guests = [guest(1, "10.0.1.11"), guest(2)]
    assert addresses.forward_address("net", None, 0, "g1", guests) == "10.0.1.11"
    with pytest.raises(ConfigError) as caught:
        addresses.forward_address("net", None, 1, "g9", guests)
    assert str(caught.value) == (
        "net: port_forwards[1].guest: 'g9' is not a guest of this network "
        "(guests with an address: g1)"
    )
    with pytest.raises(ConfigError) as caught:
        addresses.forward_address("net", "kvmnet:hosts.h1.networks[0]", 0, "g2", guests)
    assert str(caught.value).startswith(
        "kvmnet:hosts.h1.networks[0].portForwards[0].guest: guest 'g2' has no address: "
    )
    assert "give the guest one" in str(caught.value)
