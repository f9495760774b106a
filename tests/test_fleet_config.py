"""The fleet program (kvmnet:hosts) and the per-host name checks, under Pulumi's mocks: no host."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest
from program_mocks import Mocks, Recording, ensure_event_loop

from kvmnet_provider.connection import HostSettings
from kvmnet_provider.errors import ConfigError
from kvmnet_provider.models import GuestSpec, NetworkArgs, collisions
from kvmnet_provider.models.collisions import claim


@pytest.fixture(autouse=True)
def fresh_claims() -> Iterator[None]:
    collisions.forget_all()
    yield
    collisions.forget_all()


@pytest.fixture(autouse=True)
def an_event_loop() -> None:
    ensure_event_loop()


def args_on(
    host: str, bridge: str, tap: str, guest: str, subnet: str = "10.0.1.0/24"
) -> NetworkArgs:
    return NetworkArgs(
        connection=HostSettings(host=host),
        bridge=bridge,
        subnet=subnet,
        gateway=subnet.rsplit(".", 1)[0] + ".254",
        # g<N>'s MAC ends in N: only the name under test collides.
        guests=[GuestSpec(name=guest, tap=tap, mac=f"52:54:00:00:01:{int(guest[1:]):02x}")],
    )


def test_the_same_names_on_two_hosts_are_fine() -> None:
    claim("h1-nat", args_on("192.0.2.1", "br-in", "vif1.0", "g1"), host_subnet=True)
    claim("h2-nat", args_on("192.0.2.2", "br-in", "vif1.0", "g1"), host_subnet=True)


@pytest.mark.parametrize(
    "second, words",
    [
        (("br-in", "vif2.0", "g2", "10.0.2.0/24"), "bridge 'br-in'"),
        (("br-rt", "vif1.0", "g2", "10.0.2.0/24"), "tap 'vif1.0'"),
        (("br-rt", "vif2.0", "g1", "10.0.2.0/24"), "guest 'g1'"),
        (("br-rt", "vif2.0", "g2", "10.0.1.128/25"), "subnet 10.0.1.128/25 overlaps 10.0.1.0/24"),
    ],
)
def test_a_name_taken_on_the_same_host_fails_naming_host_and_both_networks(
    second: tuple[str, str, str, str], words: str
) -> None:
    claim("h1-nat", args_on("192.0.2.1", "br-in", "vif1.0", "g1"), host_subnet=True)
    # A library program's NetworkArgs: ConfigError (one line, still a ValueError), naming
    # the networks by resource name.
    with pytest.raises(ConfigError) as exc:
        claim("h1-routed", args_on("192.0.2.1", *second), host_subnet=True)
    message = str(exc.value)
    assert isinstance(exc.value, ValueError) and "\n" not in message, message
    assert message.startswith("h1-routed: "), message
    assert words in message and "root@192.0.2.1:22" in message, message
    assert "h1-routed" in message and "h1-nat" in message, message


def test_isolated_networks_may_reuse_a_subnet() -> None:
    claim("iso1", args_on("192.0.2.1", "br-a", "vif1.0", "g1"), host_subnet=False)
    claim("iso2", args_on("192.0.2.1", "br-b", "vif2.0", "g2"), host_subnet=False)


IMAGE = json.dumps({"kernel": "/k", "initrd": "/i"})


def fleet_config(hosts: dict[str, Any], **stack: str) -> None:
    config = {"kvmnet:guestImage": IMAGE, **{f"kvmnet:{k}": v for k, v in stack.items()}}
    pulumi.runtime.set_all_config({"kvmnet:hosts": json.dumps(hosts), **config})


def network(name: str, bridge: str, tap: str, guest: str, subnet: str) -> dict[str, Any]:
    gateway = subnet.rsplit(".", 1)[0] + ".254"
    return {
        "name": name,
        "model": "nat",
        "bridge": bridge,
        "subnet": subnet,
        "gateway": gateway,
        "guests": [{"name": guest, "address": subnet.rsplit(".", 1)[0] + ".11", "tap": tap}],
    }


def run_fleet() -> None:
    from kvmnet_provider.program import build

    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=True)
    build()


def test_fleet_config_declares_each_hosts_networks() -> None:
    from kvmnet_provider.program.hosts import fleet_hosts

    fleet_config(
        {
            "h1": {
                "connection": {"host": "192.0.2.1"},
                "networks": [
                    network("nat", "br-in", "vif1.0", "g1", "10.0.1.0/24"),
                    {
                        **network("routed", "br-rt", "vif3.0", "r1", "10.0.2.0/24"),
                        "model": "routed",
                    },
                ],
            },
            "h2": {
                "connection": {"host": "192.0.2.2", "port": 2222},
                "networks": [network("nat", "br-in", "vif1.0", "g1", "10.0.1.0/24")],
            },
        }
    )
    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=True)
    hosts = fleet_hosts(pulumi.Config("kvmnet"))
    assert [
        (h.name, [(n.name, n.model, n.args.connection.label, n.args.bridge) for n in h.networks])
        for h in hosts
    ] == [
        (
            "h1",
            [
                ("nat", "nat", "root@192.0.2.1:22", "br-in"),
                ("routed", "routed", "root@192.0.2.1:22", "br-rt"),
            ],
        ),
        ("h2", [("nat", "nat", "root@192.0.2.2:2222", "br-in")]),
    ]
    run_fleet()  # declares every network: no collision across hosts


def test_fleet_collision_on_one_host_fails_the_program() -> None:
    fleet_config(
        {
            "h1": {
                "connection": {"host": "192.0.2.1"},
                "networks": [
                    network("nat", "br-in", "vif1.0", "g1", "10.0.1.0/24"),
                    network("nat2", "br-in2", "vif1.0", "g2", "10.0.2.0/24"),
                ],
            }
        }
    )
    with pytest.raises(
        ConfigError,
        match=r"^kvmnet:hosts\.h1\.networks\[1\]\.guests\[0\]\.tap: tap 'vif1\.0' is already "
        r"declared on host root@192\.0\.2\.1:22 by kvmnet:hosts\.h1\.networks\[0\]\.guests\[0\]"
        r"\.tap; names must be unique per host \(rename one of them\)$",
    ):
        run_fleet()


def on_h2(*networks: dict[str, Any]) -> dict[str, Any]:
    return {"h2": {"connection": {"host": "192.0.2.2"}, "networks": list(networks)}}


NAT = network("nat", "br-in", "vif1.0", "g1", "10.0.1.0/24")


@pytest.mark.parametrize(
    "hosts, line",
    [
        (
            on_h2(NAT, network("nat2", "br-in", "vif2.0", "g2", "10.0.2.0/24")),
            "kvmnet:hosts.h2.networks[1].bridge: bridge 'br-in' is already declared on host "
            "root@192.0.2.2:22 by kvmnet:hosts.h2.networks[0].bridge; names must be unique per "
            "host (rename one of them)",
        ),
        (
            on_h2(
                NAT,
                {
                    **network("nat2", "br-in2", "vif2.0", "g2", "10.0.1.128/25"),
                    "guests": [{"name": "g2", "address": "10.0.1.131", "tap": "vif2.0"}],
                },
            ),
            "kvmnet:hosts.h2.networks[1].subnet: subnet 10.0.1.128/25 overlaps 10.0.1.0/24 of "
            "network kvmnet:hosts.h2.networks[0] on host root@192.0.2.2:22; give each network "
            "on a host its own subnet",
        ),
        (
            on_h2({**NAT, "model": "isolated", "dhcp": True}),
            "kvmnet:hosts.h2.networks[0].dhcp: an isolated network's bridge has no address",
        ),
    ],
)
def test_fleet_declaration_errors_are_one_config_line_naming_the_property(
    hosts: dict[str, Any], line: str
) -> None:
    fleet_config(hosts)
    with pytest.raises(ConfigError) as exc:
        run_fleet()
    message = str(exc.value)
    assert message.startswith(line) and "\n" not in message, message


@pytest.mark.parametrize(
    "hosts, words",
    [
        ({}, "kvmnet:hosts: must be a non-empty object"),
        ({"H 1": {}}, "kvmnet:hosts: must be 1-32 of a-z"),
        (
            {"h1": {"connection": {"host": "bad host"}, "networks": []}},
            "kvmnet:hosts.h1.connection.host",
        ),
        (
            {"h1": {"connection": {"host": "192.0.2.1"}, "networks": []}},
            "kvmnet:hosts.h1.networks: must be a non-empty list",
        ),
        (
            {
                "h1": {
                    "connection": {"host": "192.0.2.1"},
                    "networks": [{"name": "n", "model": "mesh"}],
                }
            },
            "kvmnet:hosts.h1.networks[0].model: unknown model 'mesh'",
        ),
        (
            {"h1": {"connection": {"host": "192.0.2.1"}, "networks": [{"name": "n", "colour": 1}]}},
            "kvmnet:hosts.h1.networks[0].colour: unknown key",
        ),
        (
            {
                "h1": {
                    "connection": {"host": "192.0.2.1"},
                    "networks": [
                        {
                            **network("n", "br-in", "vif1.0", "g1", "10.0.1.0/24"),
                            "guests": [{"name": "g1", "cloudInit": {"userData": "a: [b"}}],
                        }
                    ],
                }
            },
            "kvmnet:hosts.h1.networks[0].guests[0].cloudInit.userData: text must start with",
        ),
        # A mistyped key in a fleet network.
        (
            on_h2({**NAT, "subnte": "10.0.2.0/24"}),
            "kvmnet:hosts.h2.networks[0].subnte: unknown key",
        ),
        (
            {"h2": {"connection": {"host": "192.0.2.2", "knownhosts": "/k"}, "networks": [NAT]}},
            "kvmnet:hosts.h2.connection.knownhosts: unknown setting",
        ),
        (
            {"H2": on_h2(NAT)["h2"]},
            "kvmnet:hosts: must be 1-32 of a-z, 0-9 and '-' (a name), got 'H2'",
        ),
        (
            {"h2": {**on_h2(NAT)["h2"], "conection": {}}},
            "kvmnet:hosts.h2.conection: unknown key (known: connection, networks, sshPassword",
        ),
        (
            on_h2({**NAT, "guests": [{"address": "10.0.1.11"}]}),
            "kvmnet:hosts.h2.networks[0].guests[0].name: must be",
        ),
        (
            on_h2({**NAT, "model": "isolated", "guests": [{"name": "g1"}]}),
            "kvmnet:hosts.h2.networks[0].guests[0].address: required on a network without DHCP",
        ),
        (
            on_h2({**NAT, "guests": [{"name": "g1", "adress": "10.0.1.11"}]}),
            "kvmnet:hosts.h2.networks[0].guests[0].adress: unknown key (known: name, address",
        ),
        (
            on_h2({**NAT, "portForwards": [{"guest": "g9", "guest_port": 80, "host_port": 80}]}),
            "kvmnet:hosts.h2.networks[0].portForwards[0].guest: 'g9' is not one of "
            "kvmnet:hosts.h2.networks[0].guests ['g1']",
        ),
        (
            on_h2({**NAT, "subnet": "10.0.1.0/33"}),
            "kvmnet:hosts.h2.networks[0].subnet: '10.0.1.0/33' is not an IPv4 network",
        ),
        (
            on_h2({**NAT, "rollbackSeconds": "soon"}),
            "kvmnet:hosts.h2.networks[0].rollbackSeconds: must be a whole number",
        ),
        # Found by the program, with the config path (the provider's check has no path).
        (
            on_h2(
                {
                    **NAT,
                    "model": "bridged",
                    "uplink": "eth0",
                    "bridgeAddresses": ["198.18.0.11/24", "198.18.0.12"],
                }
            ),
            "kvmnet:hosts.h2.networks[0].bridgeAddresses[1]: must be an address with a prefix "
            "such as 10.0.1.254/24, got '198.18.0.12'",
        ),
        (
            on_h2({**NAT, "bridgeAddresses": ["198.18.0.0/24"]}),
            "kvmnet:hosts.h2.networks[0].bridgeAddresses[0]: 198.18.0.0/24 is the network",
        ),
        (
            on_h2({**NAT, "bridgeAddresses": ["198.18.0.11/24", "198.18.0.11/24"]}),
            "kvmnet:hosts.h2.networks[0].bridgeAddresses: has duplicates",
        ),
        (
            on_h2({**NAT, "bridgeAddresses": "198.18.0.11/24"}),
            "kvmnet:hosts.h2.networks[0].bridgeAddresses: must be a list, got str",
        ),
        (
            on_h2({**NAT, "model": "bridged", "uplink": "eth0; reboot"}),
            "kvmnet:hosts.h2.networks[0].uplink: must be an interface name of 1-15 characters",
        ),
        (
            on_h2({**NAT, "uplink": 7}),
            "kvmnet:hosts.h2.networks[0].uplink: must be an interface name",
        ),
        (
            on_h2({**NAT, "bridge": "br-much-too-long"}),
            "kvmnet:hosts.h2.networks[0].bridge: must be an interface name",
        ),
    ],
)
def test_bad_fleet_config_names_the_property(hosts: dict[str, Any], words: str) -> None:
    from kvmnet_provider.program.hosts import fleet_hosts

    fleet_config(hosts)
    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=True)
    with pytest.raises(ConfigError) as exc:
        fleet_hosts(pulumi.Config("kvmnet"))
    message = str(exc.value)
    assert words in message and "\n" not in message, message
    assert message.startswith("kvmnet:hosts"), message


def test_a_fleet_guest_with_nothing_to_boot_names_guest_image() -> None:
    from kvmnet_provider.program.hosts import fleet_hosts

    pulumi.runtime.set_all_config({"kvmnet:hosts": json.dumps(on_h2(NAT))})  # no guestImage
    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=True)
    with pytest.raises(ConfigError) as exc:
        fleet_hosts(pulumi.Config("kvmnet"))
    assert str(exc.value).startswith(
        "kvmnet:hosts.h2.networks[0].guests[0]: guest g1 has nothing to boot: set the stack's "
        "kvmnet:guestImage {kernel, initrd}"
    ), str(exc.value)


def test_per_host_secrets_win_for_their_host_only() -> None:
    from kvmnet_provider.connection import credentials

    hosts = {
        "h1": {"connection": {"host": "192.0.2.1"}, "sshPassword": "one"},
        "h2": {"connection": {"host": "192.0.2.2", "port": 2222}, "sshPassword": "two"},
        "h3": {"connection": {"host": "192.0.2.3"}},
    }
    try:
        credentials.configure("STACK-WIDE KEY TEXT", "stack-wide")
        credentials.configure_hosts(json.dumps(hosts))
        assert credentials.configured_password("192.0.2.1", 22) == "one"
        assert credentials.configured_key("192.0.2.1", 22) is None  # its own entry, nothing else
        assert credentials.configured_password("192.0.2.2", 2222) == "two"
        # Per-host secrets exist: a host without its own gets none, not the stack-wide one.
        assert credentials.configured_password("192.0.2.2", 22) is None
        assert credentials.configured_password("192.0.2.3", 22) is None
        assert credentials.key_source("192.0.2.3", 22) == credentials.WITHHELD
        credentials.configure_hosts("not json")  # the program reports bad config, not this
        assert credentials.configured_password("192.0.2.1", 22) == "stack-wide"
    finally:
        credentials.configure(None, None)
        credentials.configure_hosts(None)


def fake_lab(hosts: int) -> Any:
    from kvmnet_lab.lab import LabStatus

    return LabStatus.from_dict(
        {
            "name": "kx",
            "state_dir": "/tmp/kx",
            "lan": "198.18.9.0/24",
            "gateway": "198.18.9.254",
            "operator_address": "198.18.9.1",
            "hosts": [
                {
                    "name": f"h{i}",
                    "namespace": f"kx-h{i}",
                    "address": f"198.18.9.{10 + i}",
                    "port": 22,
                    "user": "root",
                    "private_key": "/tmp/kx/id_ed25519",
                    "known_hosts": "/tmp/kx/known_hosts",
                    "ssh_reachable": True,
                }
                for i in range(1, hosts + 1)
            ],
            "ext": {
                "namespace": "kx-ext",
                "address": "198.18.9.100",
                "echo_port": 7777,
                "echo_log": "/tmp/kx/echo.log",
            },
        }
    )


def test_the_demo_fleet_stack_is_valid_with_the_lab_hosts_filled_in(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kvmnet demo up --model fleet`'s copy of stacks/Pulumi.lab-fleet.yaml: each lab host's
    connection added, and the program declares every network without a collision."""
    import yaml
    from kvmnet_lab import demo

    monkeypatch.setattr(demo, "PROJECT_DIR", tmp_path)
    monkeypatch.setattr(demo, "guest_image_dir", lambda: tmp_path / "image")
    demo.prepare_project("lab-fleet", fake_lab(3), "fleet")
    config = yaml.safe_load((tmp_path / "Pulumi.lab-fleet.yaml").read_text())["config"]
    hosts = config["kvmnet:hosts"]
    assert {h: spec["connection"]["host"] for h, spec in hosts.items()} == {
        "h1": "198.18.9.11",
        "h2": "198.18.9.12",
        "h3": "198.18.9.13",
    }
    assert [n["name"] for n in hosts["h1"]["networks"]] == ["nat", "routed"]
    assert config["kvmnet:guestImage"]["kernel"] == str(tmp_path / "image" / "vmlinuz")
    fleet_config(hosts)
    run_fleet()


def test_fleet_network_dhcp_keys_and_the_guests_cmdline() -> None:
    from kvmnet_provider.program.hosts import fleet_hosts

    nat = {**network("nat", "br-in", "vif1.0", "g1", "10.0.1.0/24"), "domain": "lab.test",
           "dhcpRange": ["10.0.1.100", "10.0.1.120"]}  # fmt: skip
    routed = {**network("rt", "br-rt", "vif3.0", "r1", "10.0.2.0/24"), "model": "routed",
              "dhcp": False}  # fmt: skip
    pulumi.runtime.set_all_config(
        {
            "kvmnet:hosts": json.dumps(
                {"h1": {"connection": {"host": "192.0.2.1"}, "networks": [nat, routed]}}
            ),
            "kvmnet:guestImage": json.dumps({"kernel": "/k", "initrd": "/i"}),
        }
    )
    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=True)
    (host,) = fleet_hosts(pulumi.Config("kvmnet"))
    nat_args, routed_args = (network.args for network in host.networks)
    assert (nat_args.dhcp, nat_args.domain, nat_args.dhcp_range) == (
        None,
        "lab.test",
        ("10.0.1.100", "10.0.1.120"),
    )
    assert "kvmnet.ip=dhcp" in str(nat_args.guests[0].cmdline)
    assert "kvmnet.gw" not in str(nat_args.guests[0].cmdline)
    assert routed_args.dhcp is False
    assert "kvmnet.ip=10.0.2.11/24 kvmnet.gw=10.0.2.254" in str(routed_args.guests[0].cmdline)


def test_fleet_network_bad_dhcp_value_names_the_key() -> None:
    from kvmnet_provider.errors import ConfigError
    from kvmnet_provider.program.hosts import fleet_hosts

    bad = {**network("nat", "br-in", "vif1.0", "g1", "10.0.1.0/24"), "dhcp": "yes"}
    fleet_config({"h1": {"connection": {"host": "192.0.2.1"}, "networks": [bad]}})
    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=True)
    with pytest.raises(ConfigError, match=r"kvmnet:hosts\.h1\.networks\[0\]\.dhcp"):
        fleet_hosts(pulumi.Config("kvmnet"))


@pulumi.runtime.test
def test_nat_gets_a_dhcp_server_with_every_guest_and_isolated_none() -> Any:
    mocks = Recording()
    pulumi.runtime.set_mocks(mocks, project="kvt", stack="dev", preview=False)
    from kvmnet_provider.models import IsolatedNetwork, NatNetwork

    conn = HostSettings(host="192.0.2.9")
    guests = [GuestSpec(name="g1", tap="vif1.0", mac="52:54:00:00:01:01", address="10.0.1.11"),
              GuestSpec(name="g2", tap="vif2.0", mac="52:54:00:00:01:02")]  # fmt: skip
    nat = NatNetwork("nat", NetworkArgs(connection=conn, gateway="10.0.1.254", guests=guests))
    iso_guest = GuestSpec(name="i1", tap="vif3.0", mac="52:54:00:00:01:03")
    IsolatedNetwork("iso", NetworkArgs(connection=conn, bridge="br-iso", guests=[iso_guest]))

    def check(_: Any) -> None:
        servers = [(name, inputs) for typ, name, inputs in mocks.made if "DhcpServer" in typ]
        assert [name for name, _ in servers] == ["nat-dhcp"]
        hosts = servers[0][1]["hosts"]
        assert [(h["name"], h["mac"], h.get("address")) for h in hosts] == [
            ("g1", "52:54:00:00:01:01", "10.0.1.11"),
            ("g2", "52:54:00:00:01:02", None),
        ]
        assert servers[0][1]["domain"] == "kvm.internal"

    assert nat.dhcp is not None
    return nat.dhcp.pid.apply(check)


@pulumi.runtime.test
def test_a_bridged_networks_taps_record_their_uplink_bridges_id() -> Any:
    """As a Bridge's: a replaced UplinkBridge (another id) updates its taps, which joins them
    to the new bridge."""
    mocks = Recording()
    pulumi.runtime.set_mocks(mocks, project="kvt", stack="dev", preview=False)
    from kvmnet_provider.models import BridgedNetwork

    guests = [GuestSpec(name="b1", tap="vif1.0", mac="52:54:00:00:01:01")]
    net = BridgedNetwork(
        "lan", NetworkArgs(connection=HostSettings(host="192.0.2.9"), uplink="eth0", guests=guests)
    )

    def check(_: Any) -> None:
        taps = [inputs for typ, _, inputs in mocks.made if typ.endswith("TapPort")]
        assert [t["bridge_id"] for t in taps] == ["lan-uplink-id"], taps

    return net.taps["b1"].id.apply(check)


def test_the_docs_fleet_example_previews_as_written() -> None:
    """The yaml block of docs/fleets.md's "Many hosts in one stack", through the stack program
    (build(): the unknown-key check too), under mocks."""
    import re
    from pathlib import Path

    import yaml

    from kvmnet_provider.program import build

    doc = (Path(__file__).resolve().parent.parent / "docs" / "fleets.md").read_text()
    section = doc.split("## Many hosts in one stack", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    config = yaml.safe_load(block.group(1))["config"]
    assert "kvmnet:guestImage" in config
    pulumi.runtime.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    )
    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=True)
    build()
    without_image = {k: json.dumps(v) for k, v in config.items() if k != "kvmnet:guestImage"}
    pulumi.runtime.set_all_config(without_image)
    with pytest.raises(ConfigError, match=r"kvmnet:guestImage"):
        build()


def test_a_fleets_bad_accelerator_names_the_stack_key() -> None:
    fleet_config(on_h2(NAT), accelerator="kvn")
    with pytest.raises(ConfigError) as exc:
        run_fleet()
    assert str(exc.value) == "kvmnet:accelerator: must be one of kvm, tcg, auto, got 'kvn'"
