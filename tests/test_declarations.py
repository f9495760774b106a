"""Each resource declares its inputs once (its Args): the state's props and the provider's
field table follow from it, and the props are exactly those a stack already holds."""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pulumi.dynamic
import pytest
from pulumi._types import resource_types
from pulumi.runtime.rpc import translate_output_properties

from kvmnet_provider import CloudInit, HostSettings
from kvmnet_provider.resources import dhcp, forward_rules, guest, identity, links, netfilter, uplink
from kvmnet_provider.resources.declare import field_table, host_outputs

C = HostSettings(host="10.9.0.1")
CONN = C.to_props()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any], Any]]:
    """What each resource hands to the engine: its provider, props and options."""
    seen: list[tuple[Any, dict[str, Any], Any]] = []

    def register(self: Any, provider: Any, name: str, props: dict[str, Any], opts: Any) -> None:
        seen.append((provider, props, opts))

    monkeypatch.setattr(pulumi.dynamic.Resource, "__init__", register)
    monkeypatch.setattr(pulumi, "get_project", lambda: "p")
    monkeypatch.setattr(pulumi, "get_stack", lambda: "s")
    monkeypatch.setattr(pulumi.Output, "secret", staticmethod(lambda v: ("secret", v)))
    return seen


def _owner(kind: str, name: str) -> str:
    return identity.owner_mark(f"p/s/{kind}/{name}")


def test_props_are_those_a_stack_holds(registered: list[Any]) -> None:
    bridge = links.Bridge("b", links.BridgeArgs(C, "br0", addresses=["10.0.1.1/24"], stp=True))
    links.TapPort("t", links.TapPortArgs(C, "tap0", "br0", owner_user="qemu"))
    netfilter.PortForward("p", netfilter.PortForwardArgs(C, 80, "10.0.1.2", 8080))
    netfilter.ForwardingSetting("f", netfilter.ForwardingSettingArgs(C))
    props = [p for _, p, _ in registered]
    assert props[0] == {
        "connection": CONN, "owner": _owner("Bridge", "b"), "name": "br0",
        "addresses": ["10.0.1.1/24"], "mtu": None, "stp": True, "forward_delay": 0, "up": True,
        "adopt": False, "rollback_seconds": 30, "autostart": None, "ifindex": None, "mac": None,
    }  # fmt: skip
    assert props[1] == {
        "connection": CONN, "owner": _owner("TapPort", "t"), "name": "tap0", "bridge": "br0",
        "bridge_id": None, "owner_user": "qemu", "multi_queue": False, "mtu": None, "up": True,
        "adopt": False, "autostart": None, "ifindex": None, "mac": None,
    }  # fmt: skip
    assert props[2] == {
        "connection": CONN, "owner": _owner("PortForward", "p"), "protocol": "tcp",
        "host_port": 80, "guest_address": "10.0.1.2", "guest_port": 8080, "in_interface": None,
        "destination": None, "autostart": None, "rules": None, "backend": None,
    }  # fmt: skip
    assert props[3] == {
        "connection": CONN, "owner": _owner("ForwardingSetting", "f"), "ipv4": True,
        "ipv6": False, "autostart": None, "previous": None, "holders": None,
    }  # fmt: skip
    assert bridge is not None


def test_converted_inputs(registered: list[Any]) -> None:
    dhcp.DhcpServer(
        "d",
        dhcp.DhcpServerArgs(
            C, "br0", "10.0.1.0/24", "10.0.1.1", dhcp_range=("10.0.1.100", "10.0.1.200"),
            hosts=[dhcp.DhcpHost("g1", "52:54:00:00:00:01"),
                   {"name": "g2", "mac": "52:54:00:00:00:02"}],
        ),
    )  # fmt: skip
    guest.QemuGuest(
        "g",
        guest.QemuGuestArgs(
            C, "g1", disks=[guest.GuestDiskArgs("/d.img", "raw")],
            nics=[guest.GuestNicArgs("tap0", "52:54:00:00:00:01")],
            cloud_init=CloudInit(user_data="#cloud-config\n"),
        ),
    )  # fmt: skip
    forward_rules.ForwardRules(
        "r",
        forward_rules.ForwardRulesArgs(C, "nat", "br0", "10.0.1.0/24", ({"guest": "10.0.1.2"},)),
    )
    (_, server, _), (_, qemu, qemu_opts), (_, rules, _) = registered
    assert server["dhcp_range"] == ["10.0.1.100", "10.0.1.200"]
    assert server["hosts"] == [
        {"name": "g1", "mac": "52:54:00:00:00:01", "address": None},
        {"name": "g2", "mac": "52:54:00:00:00:02"},
    ]
    assert server["serving"] is True
    assert qemu["disks"] == [{"path": "/d.img", "format": "raw", "interface": "virtio"}]
    assert qemu["nics"] == [{"tap": "tap0", "mac": "52:54:00:00:00:01", "model": "virtio-net-pci"}]
    assert qemu["cloud_init"] == ("secret", CloudInit(user_data="#cloud-config\n").to_props())
    assert qemu_opts.additional_secret_outputs == ["cloud_init", "cloud_init_sha256"]
    assert rules["forwards"] == [{"guest": "10.0.1.2"}]


RESOURCES = [
    (links.Bridge, links.BridgeArgs(C, "br0")),
    (links.TapPort, links.TapPortArgs(C, "tap0", "br0", external_bridge=True)),
    (uplink.UplinkBridge, uplink.UplinkBridgeArgs(C, "br0", "eth0")),
    (netfilter.ForwardingSetting, netfilter.ForwardingSettingArgs(C)),
    (netfilter.MasqueradeRule, netfilter.MasqueradeRuleArgs(C, "10.0.1.0/24")),
    (netfilter.PortForward, netfilter.PortForwardArgs(C, 80, "10.0.1.2", 8080)),
    (forward_rules.ForwardRules, forward_rules.ForwardRulesArgs(C, "isolated", "br0")),
    (dhcp.DhcpServer, dhcp.DhcpServerArgs(C, "br0", "10.0.1.0/24", "10.0.1.1")),
    (guest.QemuGuest, guest.QemuGuestArgs(C, "g1", kernel="/boot/vmlinuz")),
]


@pytest.mark.parametrize("resource, args", RESOURCES, ids=lambda r: getattr(r, "__name__", ""))
def test_props_follow_the_declaration(registered: list[Any], resource: Any, args: Any) -> None:
    resource("x", args)
    ((provider, props, opts),) = registered
    assert type(provider) is resource.provider_type
    assert provider.fields == field_table(type(args))
    outputs = host_outputs(resource, type(args))
    assert list(props) == ["connection", "owner", *provider.fields, *outputs]
    assert all(props[o] is None for o in outputs)
    assert opts.delete_before_replace is True
    # The props as made pass the rules (every default is one its rule accepts); normalise
    # is check without the host (uplink.UplinkBridge's check asks the host about its NIC).
    assert provider.normalise(props)[1] == []


@pytest.mark.parametrize("resource, args", RESOURCES, ids=lambda r: getattr(r, "__name__", ""))
def test_required_means_no_default(resource: Any, args: Any) -> None:
    fields = {f.name: f for f in dataclasses.fields(args)}
    for name, spec in field_table(type(args)).items():
        has_default = fields[name].default is not dataclasses.MISSING or (
            fields[name].default_factory is not dataclasses.MISSING
        )
        assert spec.required is not has_default, name
        if spec.required:
            failures = resource.provider_type().check({}, {"connection": CONN, "owner": "o"})
            assert (name, f"{name} is required") in [
                (f.property, f.reason) for f in failures.failures
            ]


def test_fixed_inputs_are_not_arguments() -> None:
    with pytest.raises(TypeError):
        netfilter.ForwardingSettingArgs(C, ipv4=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        dhcp.DhcpServerArgs(C, "br0", "10.0.1.0/24", "10.0.1.1", serving=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        links.BridgeArgs(C)  # type: ignore[call-arg]


# Host outputs as a host answers them (taken from a lab stack's state): the SDK translates a
# resource's outputs by its class's annotations, and a value of another shape fails the program.
HOST_OUTPUTS = [
    (netfilter.ForwardingSetting, {"ipv4": True, "previous": {"ipv4": "0"}, "holders": 1}),
    (
        forward_rules.ForwardRules,
        {
            "jump": "filter FORWARD",
            "problems": [],
            "backend": "iptables",
            "rules": {
                "cross": [{"iif": "br-in", "oif": "br-in", "verdict": "accept"}],
                "input": [{"ct": "dnat", "dport": 22, "dst": "10.0.1.11/32", "proto": "tcp"}],
                "output": [],
                "pass": [],
            },
        },
    ),
    (
        dhcp.DhcpServer,
        {
            "pid": 40.0,
            "leases": [],
            "run_dir": "/run/kvmnet/dhcp/br-in",
            "problems": [],
            "backend": "nftables",
            "serving": True,
            "rules": [{"dport": 67, "iif": "br-in", "proto": "udp", "verdict": "accept"}],
        },
    ),
    (
        uplink.UplinkBridge,
        {
            "mac": "52:54:00:00:00:01",
            "ifindex": 3.0,
            "live_addresses": ["198.18.157.11/24"],
            "previous_addresses": ["198.18.157.11/24"],
            "moved_routes": [
                {"dst": "default", "family": 2, "gateway": "198.18.157.254", "priority": None}
            ],
        },
    ),
    (
        guest.QemuGuest,
        {
            "argv_sha256": "ab12",
            "requested": {"accelerator": "auto", "console_socket": None, "qmp_socket": None},
            "cloud_init_sha256": None,
            "disk_path": None,
            "macs": ["52:54:00:00:00:01"],
        },
    ),
]


@pytest.mark.parametrize(
    "resource, outputs", HOST_OUTPUTS, ids=lambda r: getattr(r, "__name__", "")
)
def test_output_annotations_fit_the_host_answers(resource: Any, outputs: dict[str, Any]) -> None:
    types = resource_types(resource)
    for name, value in outputs.items():
        assert name in types, name
        translate_output_properties(value, lambda k: k, types[name], True)  # raises on a misfit
