"""A stack-config guest's default tap and MAC (guest_defaults.py) and how the one-host and fleet
programs use them: from the guest's identity, so other guests and networks coming and going
change nothing, and different stacks and networks differ. Pure: no engine, no host."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest

from kvmnet_provider.models import GuestSpec
from kvmnet_provider.program.guest_defaults import default_mac, default_tap
from kvmnet_provider.spec import validate

IMAGE = {"kernel": "/k", "initrd": "/i"}
NAME_CHARS = string.ascii_letters + string.digits + "_.-"


@pytest.fixture(autouse=True)
def in_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Project `kvmnet`, stack `dev` (as the engine would say), and the test image."""
    at_stack(monkeypatch, "kvmnet", "dev")
    pulumi.runtime.set_all_config({"kvmnet:guestImage": json.dumps(IMAGE)})
    yield
    pulumi.runtime.set_all_config({})


def at_stack(monkeypatch: pytest.MonkeyPatch, project: str, stack: str) -> None:
    monkeypatch.setattr(pulumi, "get_project", lambda: project)
    monkeypatch.setattr(pulumi, "get_stack", lambda: stack)


def one_host(*names: str, **extra: Any) -> dict[str, GuestSpec]:
    """The one-host program's GuestSpecs of guests `names` (addresses in order), by name."""
    from kvmnet_provider.program.guests import guest_specs

    raw = [{"name": n, "address": f"10.0.1.{11 + i}", **extra} for i, n in enumerate(names)]
    specs = guest_specs(raw, pulumi.Config("kvmnet"), "10.0.1.0/24", "10.0.1.254")
    return {g.name: g for g in specs}


def names_of(spec: GuestSpec) -> tuple[str, str]:
    return spec.tap, spec.mac


def test_short_names_are_used_whole_and_long_ones_hashed_within_15_characters() -> None:
    assert default_tap("g1") == "vm-g1"
    assert default_tap("x" * 11) == "vm-" + "x" * 11  # 14 characters
    long = default_tap("database-primary")
    assert long.startswith("vm-datab-") and len(long) == 15
    assert default_tap("database-primary") == long  # deterministic
    assert default_tap("database-replica") != long  # the same head, another hash


@pytest.mark.parametrize("length", range(1, 33))
def test_every_guest_name_length_gives_a_valid_tap(length: int) -> None:
    """Guest names are 1-32 of [A-Za-z0-9_.-] (spec/guest.py): every one is a valid tap."""
    for offset in range(len(NAME_CHARS)):
        name = "".join(NAME_CHARS[(offset + k) % len(NAME_CHARS)] for k in range(length))
        if name in (".", ".."):
            continue
        tap = default_tap(name)
        assert validate.ifname(tap) == tap
        assert len(tap) == (length + 3 if length <= 11 else 15)


def test_the_short_and_hashed_forms_never_meet() -> None:
    """A 12-character name's tap (hashed, 15) is never a short name's (at most 14)."""
    short = {default_tap("a" * n) for n in range(1, 12)}
    hashed = {default_tap("a" * n) for n in range(12, 33)}
    assert len(short) == 11 and len(hashed) == 21 and not short & hashed


def test_a_default_mac_is_qemus_prefix_and_a_valid_unicast_address() -> None:
    mac = default_mac("kvmnet", "dev", "kvmnet:guests", "g1")
    assert validate.mac(mac) == mac and mac.startswith("52:54:00:")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert default_mac("kvmnet", "dev", "kvmnet:guests", "g1") == mac  # deterministic


@pytest.mark.parametrize(
    "other",
    [
        ("kvmnet", "prod", "kvmnet:guests", "g1"),
        ("other", "dev", "kvmnet:guests", "g1"),
        ("kvmnet", "dev", "kvmnet:hosts.h1.networks.nat.guests", "g1"),
        ("kvmnet", "dev", "kvmnet:guests", "g2"),
        ("kvmnet", "devkvmnet:guests", "", "g1"),  # the parts are not just run together
    ],
)
def test_a_default_mac_differs_with_each_part(other: tuple[str, str, str, str]) -> None:
    assert default_mac(*other) != default_mac("kvmnet", "dev", "kvmnet:guests", "g1")


def test_removing_a_guest_leaves_the_others_tap_and_mac() -> None:
    """Defaults come from names, not positions: removing g2 does not move g3 to g2's tap and
    MAC."""
    before = one_host("g1", "g2", "g3", "a-guest-with-a-long-name")
    after = one_host("g1", "g3", "a-guest-with-a-long-name")
    for name in after:
        assert names_of(after[name]) == names_of(before[name]), name
    assert before["g2"].tap == "vm-g2"
    renamed = one_host("g1", "web", "g3", "a-guest-with-a-long-name")
    assert {n: names_of(g) for n, g in renamed.items() if n != "web"} == {
        n: names_of(g) for n, g in before.items() if n != "g2"
    }
    assert len({g.mac for g in before.values()}) == 4


def test_two_stacks_guests_get_different_macs(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = one_host("g1", "g2")
    at_stack(monkeypatch, "kvmnet", "prod")
    prod = one_host("g1", "g2")
    at_stack(monkeypatch, "another-project", "dev")
    other = one_host("g1", "g2")
    for name in ("g1", "g2"):
        assert len({dev[name].mac, prod[name].mac, other[name].mac}) == 3
        assert dev[name].tap == prod[name].tap == f"vm-{name}"  # the guest's own name


def test_a_tap_and_mac_set_in_config_are_used_as_written() -> None:
    (spec,) = one_host("g1", tap="vif1.0", mac="52:54:00:00:01:01").values()
    assert names_of(spec) == ("vif1.0", "52:54:00:00:01:01")


def fleet_guests(hosts: dict[str, list[tuple[str, list[str]]]]) -> dict[tuple[str, str], GuestSpec]:
    """The fleet program's GuestSpecs, by (host, guest), of {host: [(network, [guest])]}."""
    from kvmnet_provider.program.hosts import fleet_hosts

    def network(index: int, name: str, guests: list[str]) -> dict[str, Any]:
        net = f"10.0.{index + 1}"
        listed = [{"name": g, "address": f"{net}.{11 + k}"} for k, g in enumerate(guests)]
        return {"name": name, "model": "nat", "bridge": f"br-{name}", "subnet": f"{net}.0/24",
                "gateway": f"{net}.254", "guests": listed}  # fmt: skip

    config = {
        host: {
            "connection": {"host": f"192.0.2.{k + 1}"},
            "networks": [network(i, n, g) for i, (n, g) in enumerate(networks)],
        }
        for k, (host, networks) in enumerate(hosts.items())
    }
    pulumi.runtime.set_all_config(
        {"kvmnet:hosts": json.dumps(config), "kvmnet:guestImage": json.dumps(IMAGE)}
    )
    return {
        (host.name, g.name): g
        for host in fleet_hosts(pulumi.Config("kvmnet"))
        for network in host.networks
        for g in network.args.guests
    }


def test_fleet_macs_differ_across_networks_and_hosts_and_stay_when_a_network_goes() -> None:
    both = fleet_guests({"h1": [("nat", ["g1"]), ("lan", ["b1", "b2"])], "h2": [("nat", ["g1"])]})
    assert both[("h1", "g1")].tap == both[("h2", "g1")].tap == "vm-g1"
    assert len({g.mac for g in both.values()}) == 4  # g1 on h1 and on h2 too
    # Removing h1's first network (so `lan` is now networks[0]) and lan's first guest.
    fewer = fleet_guests({"h1": [("lan", ["b2"])], "h2": [("nat", ["g1"])]})
    for key, spec in fewer.items():
        assert names_of(spec) == names_of(both[key]), key
