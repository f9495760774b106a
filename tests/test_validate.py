"""Pure unit tests of the input rules (agent/validate.py), HostSettings and providers' check."""

from __future__ import annotations

from typing import Any

import pytest

from kvmnet_provider.connection import HostSettings
from kvmnet_provider.connection.settings import SettingError
from kvmnet_provider.resources.links import BridgeProvider, TapPortProvider
from kvmnet_provider.resources.netfilter import (
    ForwardingSettingProvider,
    MasqueradeRuleProvider,
    PortForwardProvider,
)
from kvmnet_provider.spec import validate
from kvmnet_provider.spec.validate import InvalidInput

KEY = "ssh-ed25519 " + "AAAAC3NzaC1lZDI1NTE5AAAAIHk5" + "A" * 40


@pytest.mark.parametrize("name", ["br0", "vif1.0", "br-in", "a", "x" * 15, "B_r.9-"])
def test_ifname_accepts(name: str) -> None:
    assert validate.ifname(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "br in", "br/x", "br:0", ".", "..", "é", 7, None])
def test_ifname_rejects(name: Any) -> None:
    with pytest.raises(InvalidInput, match="interface name"):
        validate.ifname(name)


@pytest.mark.parametrize(
    ("value", "normal"),
    [("10.0.1.254/24", "10.0.1.254/24"), ("192.168.1.1/32", "192.168.1.1/32"),
     ("10.0.0.0/31", "10.0.0.0/31"), ("fd00::1/64", "fd00::1/64")],
)  # fmt: skip
def test_interface_address_accepts(value: str, normal: str) -> None:
    assert validate.interface_address(value) == normal


@pytest.mark.parametrize(
    ("value", "message"),
    [("10.0.1.254", "with a prefix"), ("10.0.1.999/24", "not a valid"),
     ("10.0.1.0/24", "network address"), ("10.0.1.1/33", "not a valid"), (["x"], "with a prefix")],
)  # fmt: skip
def test_interface_address_rejects(value: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate.interface_address(value)


def test_network() -> None:
    assert validate.network("10.0.1.0/24") == "10.0.1.0/24"
    assert validate.network("0.0.0.0/0") == "0.0.0.0/0"
    with pytest.raises(
        InvalidInput, match=r"host bits set: 10.0.1.5/24 \(the network is 10.0.1.0/24\)"
    ):
        validate.network("10.0.1.5/24")
    with pytest.raises(InvalidInput, match="CIDR form"):
        validate.network("10.0.1.0")
    with pytest.raises(InvalidInput, match="not a valid CIDR"):
        validate.network("10.0.300.0/24")
    with pytest.raises(InvalidInput, match="IPv4"):
        validate.network("fd00::/64")


@pytest.mark.parametrize("value", [68, 1500, 9000, 65535, 1400.0])
def test_mtu_accepts(value: Any) -> None:
    assert validate.mtu(value) == int(value)


@pytest.mark.parametrize("value", [10, 67, 65536, 70000, True, "1500", 1500.5, None])
def test_mtu_rejects(value: Any) -> None:
    with pytest.raises(InvalidInput):
        validate.mtu(value)


def test_mac() -> None:
    assert validate.mac("52:54:00:AB:cd:01") == "52:54:00:ab:cd:01"
    with pytest.raises(InvalidInput, match="multicast"):
        validate.mac("01:00:5e:00:00:01")
    for bad in ("52:54:00:ab:cd", "52-54-00-ab-cd-01", 5):
        with pytest.raises(InvalidInput, match="MAC"):
            validate.mac(bad)


def test_owner_user_boolean_range() -> None:
    assert validate.owner("kvt/dev/Bridge/br") == "kvt/dev/Bridge/br"
    for bad in ("", "has space", "x" * 201, "a;b"):
        with pytest.raises(InvalidInput):
            validate.owner(bad)
    assert validate.user_name("kvm_user-1") == "kvm_user-1"
    for bad in ("Root", "1abc", "a b", "x" * 33):
        with pytest.raises(InvalidInput, match="POSIX"):
            validate.user_name(bad)
    assert validate.boolean(False) is False
    for bad in (0, 1, "true", None):
        with pytest.raises(InvalidInput, match="true or false"):
            validate.boolean(bad)
    assert validate.int_range(4.0, 0, 30) == 4
    for bad in (-1, 31, True, 2.5, "3"):
        with pytest.raises(InvalidInput):
            validate.int_range(bad, 0, 30)


# --- HostSettings ----------------------------------------------------------------------------
def test_host_settings_defaults_and_round_trip() -> None:
    s = HostSettings.from_props({"host": "198.18.0.11"})
    assert s == HostSettings(host="198.18.0.11")
    assert s.port == 22 and s.user == "root" and s.python == "python3" and not s.sudo
    assert s.label == "root@198.18.0.11:22"
    full = HostSettings(
        host="kvm1.example.org", port=2222, user="ops", known_hosts="/etc/ssh/known",
        private_key_path="/root/.ssh/id_ed25519", python="/usr/bin/python3", sudo=True,
        connect_timeout=3,
    )  # fmt: skip
    again = HostSettings.from_props(full.to_props())
    assert again == full and isinstance(again.connect_timeout, float)
    assert "host_key" not in full.to_props()  # None is left out of the state
    pinned = HostSettings.from_props({"host": "10.0.0.1", "host_key": f"  {KEY}\n"})
    assert pinned.host_key == KEY
    assert HostSettings.from_props({"host": "10.0.0.1", "port": 22.0}).port == 22


@pytest.mark.parametrize(
    ("props", "prop"),
    [
        ("not a dict", "connection"),
        ({}, "connection.host"),
        ({"host": "bad host!"}, "connection.host"),
        ({"host": "-x.example"}, "connection.host"),
        ({"host": "h", "port": 0}, "connection.port"),
        ({"host": "h", "port": 65536}, "connection.port"),
        ({"host": "h", "port": True}, "connection.port"),
        ({"host": "h", "port": "22"}, "connection.port"),
        ({"host": "h", "user": "Root!"}, "connection.user"),
        ({"host": "h", "known_hosts": "relative/kh"}, "connection.known_hosts"),
        ({"host": "h", "private_key_path": "/a b/key"}, "connection.private_key_path"),
        ({"host": "h", "host_key": "not a key"}, "connection.host_key"),
        ({"host": "h", "host_key": "ssh-dss " + "A" * 60}, "connection.host_key"),
        ({"host": "h", "sudo": "yes"}, "connection.sudo"),
        ({"host": "h", "insecure_accept_any_host_key": 1},
         "connection.insecure_accept_any_host_key"),
        ({"host": "h", "insecure_accept_any_host_key": True, "host_key": KEY},
         "connection.insecure_accept_any_host_key"),
        ({"host": "h", "insecure_accept_any_host_key": True, "known_hosts": "/k"},
         "connection.insecure_accept_any_host_key"),
        ({"host": "h", "python": "bin/my python"}, "connection.python"),
        ({"host": "h", "python": "python3; rm -rf /"}, "connection.python"),
        ({"host": "h", "connect_timeout": 0}, "connection.connect_timeout"),
        ({"host": "h", "connect_timeout": 301}, "connection.connect_timeout"),
        ({"host": "h", "colour": "blue"}, "connection.colour"),
        ({"host": "h", "password": "hunter2"}, "connection.password"),
    ],
)  # fmt: skip
def test_host_settings_rejects(props: Any, prop: str) -> None:
    with pytest.raises(SettingError) as caught:
        HostSettings.from_props(props)
    assert caught.value.prop == prop
    assert str(caught.value).startswith(prop + ":")
    assert "hunter2" not in str(caught.value)


def test_python_setting_accepts_commands_and_paths() -> None:
    for python in ("python3", "python3.11", "/usr/bin/python3", "/opt/venv-1/bin/python"):
        assert HostSettings.from_props({"host": "h", "python": python}).python == python


def test_insecure_is_an_explicit_opt_in() -> None:
    s = HostSettings.from_props({"host": "h", "insecure_accept_any_host_key": True})
    assert s.insecure_accept_any_host_key is True
    assert HostSettings.from_props({"host": "h"}).insecure_accept_any_host_key is False


# --- providers' check and diff (no engine, no host) -----------------------------------------
CONN = {"host": "198.18.0.11"}


def bridge_props(**kw: Any) -> dict[str, Any]:
    return {"connection": CONN, "owner": "kvt/dev/Bridge/br", "name": "br-in", **kw}


def failures(provider: Any, props: dict[str, Any]) -> dict[str, str]:
    result = provider.check({}, props)
    return {f.property: f.reason for f in result.failures}


def test_bridge_check_normalises() -> None:
    result = BridgeProvider().check({}, bridge_props(addresses=["10.0.9.1/24", "10.0.1.254/24"]))
    assert not result.failures
    assert result.inputs["addresses"] == ["10.0.1.254/24", "10.0.9.1/24"]  # sorted
    assert result.inputs["stp"] is False and result.inputs["forward_delay"] == 0
    assert result.inputs["up"] is True and result.inputs["mtu"] is None
    assert result.inputs["connection"] == HostSettings(host="198.18.0.11").to_props()


def test_bridge_check_names_every_bad_property() -> None:
    found = failures(
        BridgeProvider(),
        bridge_props(name="br in", addresses=["10.0.1.1"], mtu=70000,
                     connection={"host": "h", "port": 0}),
    )  # fmt: skip
    assert set(found) == {"name", "addresses", "mtu", "connection.port"}
    for prop, reason in found.items():
        assert reason.startswith(prop + " "), reason
    assert failures(BridgeProvider(), bridge_props(addresses=["10.0.1.1/24", "10.0.1.1/24"])) == {
        "addresses": "addresses has duplicates: ['10.0.1.1/24', '10.0.1.1/24']"
    }
    assert set(failures(BridgeProvider(), {"connection": CONN, "owner": "o"})) == {"name"}


def test_bridge_stp_forward_delay_rule() -> None:
    assert set(failures(BridgeProvider(), bridge_props(stp=True, forward_delay=1))) == {
        "forward_delay"
    }
    assert not failures(BridgeProvider(), bridge_props(stp=True, forward_delay=2))
    assert not failures(BridgeProvider(), bridge_props(stp=False, forward_delay=0))


def test_tap_masquerade_forwarding_check() -> None:
    tap = {"connection": CONN, "owner": "o", "name": "vif1.0", "bridge": "br-in"}
    assert not failures(TapPortProvider(), tap)
    assert set(failures(TapPortProvider(), {**tap, "bridge": "br/x"})) == {"bridge"}
    assert set(failures(TapPortProvider(), {**tap, "owner_user": "Bad"})) == {"owner_user"}
    masq = {"connection": CONN, "owner": "o", "source": "10.0.1.0/24"}
    assert not failures(MasqueradeRuleProvider(), masq)
    assert set(failures(MasqueradeRuleProvider(), {**masq, "source": "10.0.1.5/24"})) == {"source"}
    assert set(failures(MasqueradeRuleProvider(), {**masq, "out_interface": "x" * 16})) == {
        "out_interface"
    }
    fw = {"connection": CONN, "owner": "o", "ipv4": True}
    assert not failures(ForwardingSettingProvider(), fw)
    assert set(failures(ForwardingSettingProvider(), {**fw, "ipv4": False})) == {"ipv4"}


def test_port_forward_of_the_hosts_ssh_port_fails_check() -> None:
    """A DNAT of tcp/22 would send kvmnet's own SSH to the guest: nothing could undo it."""
    fwd = {"connection": CONN, "owner": "o", "host_port": 22, "guest_address": "10.0.1.11",
           "guest_port": 22}  # fmt: skip
    found = failures(PortForwardProvider(), fwd)
    assert set(found) == {"host_port"}
    assert "kvmnet reaches this host's sshd on tcp/22" in found["host_port"]
    assert "pick another host_port" in found["host_port"]
    assert set(failures(PortForwardProvider(), {**fwd, "host_port": 2222})) == set()
    assert not failures(PortForwardProvider(), {**fwd, "protocol": "udp"})
    on_2200 = {**fwd, "connection": {**CONN, "port": 2200}}
    assert not failures(PortForwardProvider(), on_2200)
    assert set(failures(PortForwardProvider(), {**on_2200, "host_port": 2200})) == {"host_port"}
    # a forward limited to another of the host's addresses leaves the SSH address alone
    assert not failures(PortForwardProvider(), {**fwd, "destination": "198.18.0.99"})


def test_unknown_values_pass_check_at_preview() -> None:
    from pulumi.runtime.rpc import UNKNOWN  # the SDK's sentinel, not the code under test's

    result = BridgeProvider().check({}, bridge_props(addresses=[UNKNOWN], mtu=UNKNOWN))
    assert not result.failures


def test_diff_marks_replacements_precisely() -> None:
    p = BridgeProvider()
    olds = p.check({}, bridge_props(addresses=["10.0.1.254/24"])).inputs
    same = p.diff("id", olds, dict(olds))
    assert not same.changes and not same.replaces
    in_place = p.diff("id", olds, {**olds, "addresses": ["10.0.1.1/24"], "mtu": 1400})
    assert in_place.changes and not in_place.replaces
    renamed = p.diff("id", olds, {**olds, "name": "br-new"})
    assert renamed.replaces == ["name"]
    other_host = p.diff("id", olds, {**olds, "connection": {**olds["connection"], "host": "h2"}})
    assert other_host.replaces == ["connection"]
    other_user = p.diff("id", olds, {**olds, "connection": {**olds["connection"], "user": "ops"}})
    assert other_user.changes and not other_user.replaces
    tap = TapPortProvider()
    t_olds = {"connection": CONN, "owner": "o", "name": "vif1.0", "bridge": "br-a"}
    moved = tap.diff("id", t_olds, {**t_olds, "bridge": "br-b"})
    assert moved.changes and not moved.replaces
    assert tap.diff("id", t_olds, {**t_olds, "multi_queue": True}).replaces == ["multi_queue"]
