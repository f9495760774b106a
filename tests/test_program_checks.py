"""The stack program's config checks (pure: config set in-process, no engine)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pulumi
import pytest
from program_mocks import Mocks, ensure_event_loop

from kvmnet_provider.errors import ConfigError
from kvmnet_provider.program.guest_defaults import default_mac
from kvmnet_provider.program.hosts import check_stack_config


@pytest.fixture
def config() -> Iterator[dict[str, str]]:
    values: dict[str, str] = {}
    yield values
    pulumi.runtime.set_all_config({})


def checked(values: dict[str, object]) -> None:
    pulumi.runtime.set_all_config(
        {f"kvmnet:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    )
    check_stack_config(pulumi.Config("kvmnet"))


def test_the_defaults_pass(config: dict[str, str]) -> None:
    checked({})
    checked({"autostart": False, "guests": [{"name": "g1", "autostart": False}]})
    checked({"model": "routed", "subnet": "10.0.2.0/24", "gateway": "10.0.2.1"})


@pytest.mark.parametrize(
    "values, line",
    [
        ({"model": "nat6"}, "kvmnet:model: unknown model 'nat6'"),
        ({"subnet": "10.0.1.0/33"}, "kvmnet:subnet: '10.0.1.0/33' is not an IPv4 network"),
        ({"gateway": "10.0.2.1"}, "kvmnet:gateway: 10.0.2.1 is not inside subnet 10.0.1.0/24"),
        ({"host": {"host": "h1", "colour": "blue"}}, "kvmnet:host.colour: unknown setting"),
        ({"host": {"host": "h1", "private_key_path": "-----BEGIN KEY-----x"}}, "not shown"),
        ({"firewallBackend": "pf"}, "kvmnet:firewallBackend: must be one of auto, iptables"),
        ({"accelerator": "kvn"}, "kvmnet:accelerator: must be one of kvm, tcg, auto, got 'kvn'"),
        ({"guests": {"name": "g1"}}, "kvmnet:guests: must be a list"),
        ({"guests": [{"name": "g 1"}]}, "kvmnet:guests[0].name: must be 1-32 characters"),
        ({"guests": [{"name": "g1", "memory_mib": 1}]}, "kvmnet:guests[0].memory_mib:"),
        ({"guests": [{"name": "g1", "address": 11}]}, "kvmnet:guests[0].address: must be an IPv4"),
        ({"guests": [{"name": "g1", "ram": 1}]}, "kvmnet:guests[0].ram: unknown key"),
        (
            {"portForwards": [{"guest": "g9", "guest_port": 80, "host_port": 8080}]},
            "kvmnet:portForwards[0].guest: 'g9' is not one of kvmnet:guests ['g1', 'g2']",
        ),
        (
            {"portForwards": [{"guest": "g1", "guest_port": 0, "host_port": 8080}]},
            "kvmnet:portForwards[0].guest_port: must be between 1 and 65535, got 0",
        ),
        (
            {"portForwards": [{"guest": "g1", "guest_port": 80, "host_port": 80, "protocol": "x"}]},
            "kvmnet:portForwards[0].protocol: must be tcp or udp",
        ),
        ({"uplink": "eth 0"}, "kvmnet:uplink: must be an interface name of 1-15 characters"),
        ({"bridge": "br/x"}, "kvmnet:bridge: must be an interface name"),
        (
            {"bridgeAddresses": ["198.18.0.11/24", "198.18.0.999/24"]},
            "kvmnet:bridgeAddresses[1]: is not a valid address/prefix",
        ),
        ({"bridgeAddresses": {"a": 1}}, "kvmnet:bridgeAddresses: must be a list"),
        ({"autostart": 1}, "kvmnet:autostart: must be true or false, got 1"),
        (
            {"guests": [{"name": "g1", "autostart": 1}]},
            "kvmnet:guests[0].autostart: must be true or false, got 1",
        ),
    ],
)
def test_bad_config_names_the_key(
    config: dict[str, str], values: dict[str, object], line: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        checked(values)
    assert line in str(caught.value)
    assert "\n" not in str(caught.value)


def test_memory_is_reported_as_given(config: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"got 1$"):
        checked({"guests": [{"name": "g1", "memory_mib": 1.0}]})


@pytest.mark.parametrize(
    "guest, image, line",
    [
        (
            {"name": "g1", "address": "10.0.1.11"},
            None,
            "kvmnet:guests[0]: guest g1 has nothing to boot: set the stack's kvmnet:guestImage",
        ),
        (
            {"name": "g1"},
            {"kernel": "/k", "initrd": "/i"},
            "kvmnet:guests[0].address: required on a network without DHCP",
        ),
    ],
)
def test_a_guest_the_program_cannot_boot_names_the_key(
    config: dict[str, str], guest: dict[str, object], image: object, line: str
) -> None:
    from kvmnet_provider.program.guests import guest_specs

    pulumi.runtime.set_all_config({"kvmnet:guestImage": json.dumps(image)} if image else {})
    with pytest.raises(ConfigError) as caught:
        guest_specs([guest], pulumi.Config("kvmnet"), "10.0.1.0/24", None, dhcp=False)
    assert str(caught.value).startswith(line), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_typo_in_a_top_level_key_fails_naming_it_and_the_known_keys(
    config: dict[str, str],
) -> None:
    from kvmnet_provider.program.keys import check_stack_keys, stack_config_keys

    pulumi.runtime.set_all_config({"kvmnet:accelerater": "auto", "aws:region": "x"})
    with pytest.raises(ConfigError) as caught:
        check_stack_keys(stack_config_keys())
    line = str(caught.value)
    assert line.startswith("kvmnet:accelerater: unknown stack config key (known kvmnet: keys: ")
    assert "accelerator" in line and "keepSessions" in line and "\n" not in line, line


def test_every_kvmnet_key_the_repository_uses_is_known() -> None:
    """Stacks, README and docs, tests, lab and bench: none may trip the unknown-key check (keys of
    programs of their own, which the check never sees, aside)."""
    import re
    from pathlib import Path

    from kvmnet_provider.program.keys import STACK_KEYS, check_stack_keys

    root = Path(__file__).resolve().parent.parent
    files = [root / "README.md", *root.glob("docs/*.md"), root / "bench" / "README.md"]
    files += root.glob("stacks/*.yaml")
    for folder in ("tests", "lab", "bench", "scripts", "kvmnet_provider"):
        files += (root / folder).rglob("*.py")
    found = set()
    for path in files:
        # Not owners in ifalias and rule comments (kvmnet:<project or stack>/...).
        found |= set(re.findall(r"kvmnet:([a-z][A-Za-z0-9]*)\b(?!/)", path.read_text()))
    not_keys = {
        "g2Address",  # tests/test_dhcp_e2e.py's own program reads it, not build()
        "accelerater",  # the typo above
        "index",  # kvmnet:index:<Type>
        # Owners in ifalias and rule comments: kvmnet:<project or stack>/...
        *("life", "drift", "own", "conn", "sudo", "deb", "alpha", "bench", "p", "kvmnet"),
    }
    check_stack_keys({f"kvmnet:{k}" for k in found - not_keys})
    assert {"host", "hosts", "guestImage", "sshPrivateKey"} <= set(STACK_KEYS) & found


TWO = ({"name": "g1", "address": "10.0.1.11"}, {"name": "g2", "address": "10.0.1.12"})
G1_MAC = default_mac("kvt", "dev", "kvmnet:guests", "g1")  # g1's default in the mocks' stack


@pytest.mark.parametrize(
    "second, line",
    [
        (
            {"tap": "vm-g1"},
            "kvmnet:guests[1].tap: tap 'vm-g1' is already declared on host root@192.0.2.1:22 "
            "by kvmnet:guests[0].tap; names must be unique per host (rename one of them)",
        ),
        (
            {"mac": G1_MAC},
            f"kvmnet:guests[1].mac: MAC '{G1_MAC}' is already declared on host "
            "root@192.0.2.1:22 by kvmnet:guests[0].mac; names",
        ),
        ({"name": "g1"}, "kvmnet:guests[1].name: guest 'g1' is already declared on host"),
        ({"address": "10.0.1.11"}, "kvmnet:guests[1].address: 10.0.1.11 is already g1's"),
    ],
)
def test_the_one_host_programs_collisions_name_the_keys_as_typed(
    config: dict[str, str], second: dict[str, str], line: str
) -> None:
    """Not the resource (`net: guests[1] (g2).tap`): the path the user typed, as a fleet's."""

    from kvmnet_provider.models import collisions
    from kvmnet_provider.program import build

    ensure_event_loop()
    guests = [TWO[0], {**TWO[1], **second}]
    pulumi.runtime.set_all_config(
        {
            "kvmnet:host": json.dumps({"host": "192.0.2.1"}),
            "kvmnet:guestImage": json.dumps({"kernel": "/k", "initrd": "/i"}),
            "kvmnet:dhcp": "false",
            "kvmnet:guests": json.dumps(guests),
        }
    )
    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=True)
    collisions.forget_all()
    try:
        with pytest.raises(ConfigError) as caught:
            build()
    finally:
        collisions.forget_all()
    assert str(caught.value).startswith(line) and "\n" not in str(caught.value), caught.value


def test_the_guests_output_names_each_guests_console_log() -> None:
    """The docs send the reader to `pulumi stack output guests` for the console's log."""
    from types import SimpleNamespace

    from kvmnet_provider.models import GuestSpec
    from kvmnet_provider.program.guests import guest_outputs

    spec = GuestSpec(name="deb1", tap="vif1.0", mac="52:54:00:00:01:01", address="10.0.5.10")
    live = SimpleNamespace(pid=7, console_socket="/run/g/console.sock",
                           console_log="/run/g/console.log", accelerator="tcg",
                           addresses=["10.0.5.10"])  # fmt: skip
    assert guest_outputs([spec], {"deb1": live}) == {
        "deb1": {"address": "10.0.5.10", "pid": 7, "console": "/run/g/console.sock",
                 "console_log": "/run/g/console.log", "accelerator": "tcg",
                 "addresses": ["10.0.5.10"]}
    }  # fmt: skip


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("guests", "a list of guests"),
        ("dhcp", "true or false"),
        ("autostart", "true or false"),
        ("host", "an object {host"),
    ],
)
def test_plain_text_for_a_structured_key_names_the_key_not_the_text(
    config: dict[str, str], key: str, what: str
) -> None:
    from kvmnet_provider.program.keys import check_structured_keys

    pulumi.runtime.set_all_config({f"kvmnet:{key}": "yes-PLAIN-TEXT"})
    with pytest.raises(ConfigError) as caught:
        check_structured_keys(pulumi.Config("kvmnet"))
    assert str(caught.value).startswith(f"kvmnet:{key}: must be {what}")
    assert "PLAIN-TEXT" not in str(caught.value) and "\n" not in str(caught.value)
    pulumi.runtime.set_all_config({"kvmnet:dhcp": "true", "kvmnet:guests": '[{"name": "g1"}]'})
    check_structured_keys(pulumi.Config("kvmnet"))
