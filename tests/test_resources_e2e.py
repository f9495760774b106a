"""Bridge, TapPort, ForwardingSetting, MasqueradeRule through the real engine on a lab host.

Every result is checked inside the host's namespace with `ip -j`, `iptables-legacy-save` and
`sysctl` (kvmnet_lab.testing.snapshot), never with the code under test.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.lab import HostStatus, Lab, LabStatus
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
from kvmnet_lab.testing.stack import TestStack

pytestmark = pytest.mark.e2e

VENV_PY = sys.executable


def program(host: HostStatus, body: str) -> str:
    """A stack program: `c` is the lab host's connection, then `body`."""
    head = textwrap.dedent(
        f"""
        import pulumi
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources import *

        # These tests read the rules with iptables-legacy-save: the python-iptables backend.
        c = HostSettings(host={host.address!r}, known_hosts={host.known_hosts!r},
                         private_key_path={host.private_key!r}, python={VENV_PY!r},
                         firewall_backend="iptables")
        """
    )
    return head + textwrap.dedent(body)


def ip_links(lab_api: Lab, ns: str) -> dict[str, dict[str, Any]]:
    out = run_in(lab_api, ns, ["ip", "-j", "-d", "link", "show"])
    return {link["ifname"]: link for link in json.loads(out)}


def ipv4_addresses(lab_api: Lab, ns: str, dev: str) -> list[str]:
    out = run_in(lab_api, ns, ["ip", "-j", "-4", "addr", "show", "dev", dev])
    return sorted(
        f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link["addr_info"]
    )


def nat_rules(lab_api: Lab, ns: str) -> list[str]:
    out = run_in(lab_api, ns, ["iptables-legacy-save", "-t", "nat"])
    return [line for line in out.splitlines() if line.startswith("-A POSTROUTING")]


def sysctl(lab_api: Lab, ns: str, key: str) -> str:
    return run_in(lab_api, ns, ["sysctl", "-n", key]).strip()


def masq_lines(source: str, owner: str, out_if: str | None = None) -> list[str]:
    """A MasqueradeRule's rules as iptables-save lists them: libvirt's set, in its order."""
    via = f" -o {out_if}" if out_if else ""
    mark = f'-m comment --comment "kvmnet:{owner}"'
    keep = [f"-A POSTROUTING -s {source} -d {d}{via} {mark} -j RETURN" for d in EXEMPT]
    masq = f"-A POSTROUTING -s {source} ! -d {source}{via}"
    ports = "-j MASQUERADE --to-ports 1024-65535"
    return [
        *keep,
        f"{masq} -p tcp {mark} {ports}",
        f"{masq} -p udp {mark} {ports}",
        f"{masq} {mark} -j MASQUERADE",
    ]


EXEMPT = ("224.0.0.0/24", "255.255.255.255/32")


def delete_lines(lab_api: Lab, ns: str, lines: list[str]) -> None:
    for line in lines:
        argv = shlex.split(line.replace("-A ", "-D ", 1))
        run_in(lab_api, ns, ["iptables-legacy", "-t", "nat", *argv])


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after == before, "host changed:\n" + "\n".join(diff_snapshots(before, after))


@pytest.fixture
def h1(lab: LabStatus) -> HostStatus:
    return lab.hosts[0]


@pytest.fixture
def pristine(lab_api: Lab, h1: HostStatus) -> Iterator[dict[str, Any]]:
    """The host's snapshot before the test; the test must leave it exactly so."""
    before = host_snapshot(lab_api, h1.namespace)
    yield before


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[TestStack]]:
    """Stacks a test makes; each is destroyed and removed at the end, whatever happened."""
    made: list[TestStack] = []
    yield made
    for stack in reversed(made):
        stack.remove()


# --- one stack, all four resources: create, no-op preview, in-place update, destroy ---------
LIFECYCLE_V1 = """
br = Bridge("br", BridgeArgs(connection=c, name="br-in", addresses=["10.0.1.254/24"]))
out = Bridge("out", BridgeArgs(connection=c, name="br-out"))
t1 = TapPort("t1", TapPortArgs(connection=c, name="vif1.0", bridge=br))
t2 = TapPort("t2", TapPortArgs(connection=c, name="vif2.0", bridge=br))
fw = ForwardingSetting("fw", ForwardingSettingArgs(connection=c))
m = MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source="10.0.1.0/24"))
pulumi.export("br", {"ifindex": br.ifindex, "mac": br.mac, "addresses": br.addresses})
pulumi.export("t2", {"ifindex": t2.ifindex, "bridge": t2.bridge})
"""

LIFECYCLE_V2 = """
br = Bridge("br", BridgeArgs(connection=c, name="br-in", addresses=["10.0.1.1/24", "10.0.9.1/24"],
                             mtu=1400))
out = Bridge("out", BridgeArgs(connection=c, name="br-out", stp=True, forward_delay=4))
t1 = TapPort("t1", TapPortArgs(connection=c, name="vif1.0", bridge=br))
t2 = TapPort("t2", TapPortArgs(connection=c, name="vif2.0", bridge=out))
fw = ForwardingSetting("fw", ForwardingSettingArgs(connection=c, ipv6=True))
m = MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source="10.0.1.0/24",
                                           out_interface="eth0"))
pulumi.export("br", {"ifindex": br.ifindex, "mac": br.mac, "addresses": br.addresses})
pulumi.export("t2", {"ifindex": t2.ifindex, "bridge": t2.bridge})
"""


def test_create_noop_update_destroy(
    tmp_path: Path,
    lab_api: Lab,
    h1: HostStatus,
    pristine: dict[str, Any],
    stacks: list[TestStack],
) -> None:
    ns = h1.namespace
    assert sysctl(lab_api, ns, "net.ipv4.ip_forward") == "0"
    stack = TestStack(tmp_path, program(h1, LIFECYCLE_V1), project="life")
    stacks.append(stack)

    up = stack.up()
    assert "+ 7 created" in up.stdout, up.stdout
    links = ip_links(lab_api, ns)
    br, tap1, tap2 = links["br-in"], links["vif1.0"], links["vif2.0"]
    assert br["linkinfo"]["info_kind"] == "bridge"
    assert br["ifalias"] == "kvmnet:life/dev/Bridge/br"
    assert "UP" in br["flags"]
    assert br["linkinfo"]["info_data"]["stp_state"] == 0
    assert br["linkinfo"]["info_data"]["forward_delay"] == 0
    assert ipv4_addresses(lab_api, ns, "br-in") == ["10.0.1.254/24"]
    for tap, owner in ((tap1, "t1"), (tap2, "t2")):
        assert tap["linkinfo"]["info_kind"] == "tun"
        assert tap["linkinfo"]["info_data"]["type"] == "tap"
        assert tap["linkinfo"]["info_data"]["persist"] is True
        assert tap["master"] == "br-in"
        assert tap["ifalias"] == f"kvmnet:life/dev/TapPort/{owner}"
        assert "UP" in tap["flags"]
    assert links["br-out"]["ifalias"] == "kvmnet:life/dev/Bridge/out"
    assert nat_rules(lab_api, ns) == masq_lines("10.0.1.0/24", "life/dev/MasqueradeRule/m")
    assert sysctl(lab_api, ns, "net.ipv4.ip_forward") == "1"
    assert sysctl(lab_api, ns, "net.ipv6.conf.all.forwarding") == "0"
    outs = stack.outputs()
    assert outs["br"] == {
        "ifindex": br["ifindex"],
        "mac": br["address"],
        "addresses": ["10.0.1.254/24"],
    }
    assert outs["t2"] == {"ifindex": tap2["ifindex"], "bridge": "br-in"}

    stack.preview_no_changes()
    created = host_snapshot(lab_api, ns)

    # In place: addresses + MTU of a bridge, STP of another, a tap moved, IPv6 forwarding,
    # the rule's outbound interface. Nothing is replaced.
    stack.set_program(program(h1, LIFECYCLE_V2))
    preview = stack.preview()
    assert "replace" not in preview.stdout, preview.stdout
    assert "5 to update" in preview.stdout, preview.stdout
    up = stack.up()
    assert "5 updated" in up.stdout and "2 unchanged" in up.stdout, up.stdout
    stack.preview_no_changes()

    updated = host_snapshot(lab_api, ns)
    before_links, after_links = created["links"], updated["links"]
    assert sorted(after_links) == sorted(before_links)
    changed = {
        name: sorted(k for k in before_links[name] if before_links[name][k] != after_links[name][k])
        for name in before_links
    }
    assert changed == {
        "lo": [],
        "eth0": [],
        "br-in": ["mtu"],
        "br-out": ["forward_delay", "stp_state"],
        "vif1.0": [],
        "vif2.0": ["master"],
    }, changed
    assert after_links["br-in"]["ifindex"] == before_links["br-in"]["ifindex"]
    assert after_links["vif2.0"]["ifindex"] == before_links["vif2.0"]["ifindex"]
    assert after_links["br-in"]["mtu"] == 1400
    assert after_links["vif2.0"]["master"] == "br-out"
    assert after_links["br-out"]["stp_state"] == 1
    assert after_links["br-out"]["forward_delay"] == 400  # clock ticks: 4 s
    assert ipv4_addresses(lab_api, ns, "br-in") == ["10.0.1.1/24", "10.0.9.1/24"]
    assert updated["addresses"]["vif1.0"] == created["addresses"]["vif1.0"]
    assert nat_rules(lab_api, ns) == masq_lines(
        "10.0.1.0/24", "life/dev/MasqueradeRule/m", out_if="eth0"
    )
    assert updated["sysctls"] == {
        "net.ipv4.ip_forward": "1",
        "net.ipv6.conf.all.forwarding": "1",
    }
    outs = stack.outputs()
    assert outs["br"]["ifindex"] == before_links["br-in"]["ifindex"]
    assert outs["br"]["addresses"] == ["10.0.1.1/24", "10.0.9.1/24"]
    assert outs["t2"] == {"ifindex": before_links["vif2.0"]["ifindex"], "bridge": "br-out"}

    down = stack.destroy()
    assert "7 deleted" in down.stdout, down.stdout
    assert_same(pristine, host_snapshot(lab_api, ns))
    # Its books go too: the forwarding record and the firewall lock, once nothing is in them.
    inode = run_in(lab_api, ns, ["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).strip()
    left = run_in(lab_api, ns, ["ls", "-A", f"/run/kvmnet/netns-{inode}"]).split()
    assert not [name for name in left if name.startswith(("forwarding.", "firewall."))], left


# --- drift ----------------------------------------------------------------------------------
DRIFT = """
br = Bridge("br", BridgeArgs(connection=c, name="br-in", addresses=["10.0.1.254/24"]))
t1 = TapPort("t1", TapPortArgs(connection=c, name="vif1.0", bridge=br))
m = MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source="10.0.1.0/24"))
"""


def test_drift_is_refreshed_and_restored(
    tmp_path: Path,
    lab_api: Lab,
    h1: HostStatus,
    pristine: dict[str, Any],
    stacks: list[TestStack],
) -> None:
    ns = h1.namespace
    stack = TestStack(tmp_path, program(h1, DRIFT), project="drift")
    stacks.append(stack)
    stack.up()
    built = host_snapshot(lab_api, ns)
    rules = masq_lines("10.0.1.0/24", "drift/dev/MasqueradeRule/m")
    assert nat_rules(lab_api, ns) == rules

    # 1. the bridge deleted behind Pulumi's back (its tap survives, detached)
    run_in(lab_api, ns, ["ip", "link", "del", "br-in"])
    assert "br-in" not in ip_links(lab_api, ns)
    refresh = stack.refresh()
    assert "deleted" in refresh.stdout, refresh.stdout
    assert "Bridge br deleted" in refresh.stdout or "- 1 deleted" in refresh.stdout, refresh.stdout
    assert not stack.resources("kvmnet:Bridge")
    up = stack.up()
    assert "created" in up.stdout, up.stdout
    links = ip_links(lab_api, ns)
    assert links["br-in"]["ifalias"] == "kvmnet:drift/dev/Bridge/br"
    assert ipv4_addresses(lab_api, ns, "br-in") == ["10.0.1.254/24"]
    assert links["vif1.0"]["master"] == "br-in"  # the tap's drift (no master) was seen too
    assert links["vif1.0"]["ifindex"] == built["links"]["vif1.0"]["ifindex"]
    stack.preview_no_changes()

    # 2. the masquerade rules deleted by hand
    delete_lines(lab_api, ns, rules)
    assert nat_rules(lab_api, ns) == []
    refresh = stack.refresh()
    assert "deleted" in refresh.stdout, refresh.stdout
    assert not stack.resources("kvmnet:MasqueradeRule")
    stack.up()
    assert nat_rules(lab_api, ns) == rules
    stack.preview_no_changes()
    assert host_snapshot(lab_api, ns)["iptables"] == built["iptables"]

    # 3. the single MASQUERADE an older kvmnet made, in place of the set: drift, rewritten
    delete_lines(lab_api, ns, rules)
    older = rules[-1]
    run_in(lab_api, ns, ["iptables-legacy", "-t", "nat", *shlex.split(older)])
    refresh = stack.refresh()
    assert "updated" in refresh.stdout, refresh.stdout
    stack.up()
    assert nat_rules(lab_api, ns) == rules
    stack.preview_no_changes()

    stack.destroy()
    assert_same(pristine, host_snapshot(lab_api, ns))


REPLACED = """
br = Bridge("br", BridgeArgs(connection=c, name="br-re"))
TapPort("t1", TapPortArgs(connection=c, name="vre1.0", bridge=br))
TapPort("t2", TapPortArgs(connection=c, name="vre2.0", bridge=br))
"""


def test_taps_join_their_bridge_again_when_it_is_replaced(
    tmp_path: Path,
    lab_api: Lab,
    h1: HostStatus,
    pristine: dict[str, Any],
    stacks: list[TestStack],
) -> None:
    """A bridge made anew (deleted, then created: `--replace`, or a connection that named
    another host and back) leaves the kernel's taps detached; the taps follow the bridge's
    new id, so preview shows them updated and `up` joins them to it again."""
    ns = h1.namespace
    stack = TestStack(tmp_path, program(h1, REPLACED), project="replaced")
    stacks.append(stack)
    stack.up()
    before = ip_links(lab_api, ns)
    (bridge,) = stack.resources("kvmnet:Bridge")
    preview = stack.pulumi("preview", "--diff", "--replace", bridge["urn"])
    assert "1 to replace" in preview.stdout and "2 to update" in preview.stdout, preview.stdout
    up = stack.pulumi("up", "--yes", "--skip-preview", "--replace", bridge["urn"])
    assert "1 replaced" in up.stdout and "2 updated" in up.stdout, up.stdout
    after = ip_links(lab_api, ns)
    assert after["br-re"]["ifindex"] != before["br-re"]["ifindex"]
    for tap in ("vre1.0", "vre2.0"):
        assert after[tap]["ifindex"] == before[tap]["ifindex"]  # the same taps, joined again
        assert after[tap].get("master") == "br-re", after[tap]
    stack.preview_no_changes()
    stack.destroy()
    assert_same(pristine, host_snapshot(lab_api, ns))


# --- two stacks on one host ---------------------------------------------------------------
def shared_host_program(bridge: str, cidr: str, gateway: str, taps: list[str]) -> str:
    lines = [
        f'br = Bridge("br", BridgeArgs(connection=c, name={bridge!r}, addresses=[{gateway!r}]))',
        *(
            f'TapPort("tap{i}", TapPortArgs(connection=c, name={tap!r}, bridge=br))'
            for i, tap in enumerate(taps)
        ),
        'fw = ForwardingSetting("fw", ForwardingSettingArgs(connection=c))',
        f'm = MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source={cidr!r}))',
    ]
    return "\n".join(lines) + "\n"


def test_a_second_bridge_with_anothers_network_is_refused(
    tmp_path: Path,
    lab_api: Lab,
    h1: HostStatus,
    pristine: dict[str, Any],
    stacks: list[TestStack],
) -> None:
    """Two stacks, one subnet on two bridges of a host: the second's up fails in one line
    naming the first's bridge; it made nothing that stays, and the first works on."""
    ns = h1.namespace
    prog_a = shared_host_program("br-a", "10.0.1.0/24", "10.0.1.254/24", [])
    a = TestStack(tmp_path, program(h1, prog_a), project="alpha")
    stacks.append(a)
    a.up()
    owned = host_snapshot(lab_api, ns)
    prog_b = shared_host_program("br-b", "10.0.1.0/24", "10.0.1.1/24", [])
    b = TestStack(tmp_path, program(h1, prog_b), project="beta")
    stacks.append(b)
    failed = b.up(check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0, text
    assert (
        "10.0.1.1/24: network 10.0.1.0/24 is already on br-a (10.0.1.254/24, kvmnet resource "
        "alpha/dev/Bridge/br)" in text
    ), text
    assert "Traceback" not in text, text
    assert "br-b" not in ip_links(lab_api, ns)
    b.destroy()
    assert_same(owned, host_snapshot(lab_api, ns))
    a.preview_no_changes()
    a.destroy()
    assert_same(pristine, host_snapshot(lab_api, ns))


FOREIGN_RULE = ["POSTROUTING", "-s", "172.31.0.0/16", "-j", "MASQUERADE"]
FOREIGN_LINE = "-A POSTROUTING -s 172.31.0.0/16 -j MASQUERADE"


def test_two_stacks_share_a_host(
    tmp_path: Path,
    lab_api: Lab,
    h1: HostStatus,
    pristine: dict[str, Any],
    stacks: list[TestStack],
) -> None:
    ns = h1.namespace
    original_forwarding = sysctl(lab_api, ns, "net.ipv4.ip_forward")
    run_in(lab_api, ns, ["iptables-legacy", "-t", "nat", "-A", *FOREIGN_RULE])
    try:
        prog_a = shared_host_program("br-a", "10.0.1.0/24", "10.0.1.254/24", ["vif1.0", "vif2.0"])
        a = TestStack(tmp_path, program(h1, prog_a), project="alpha")
        stacks.append(a)
        prog_b = shared_host_program(
            "br-b", "192.168.1.0/24", "192.168.1.254/24", ["vif3.0", "vif4.0"]
        )
        b = TestStack(tmp_path, program(h1, prog_b), project="beta")
        stacks.append(b)
        a.up()
        b.up()
        rules_a = masq_lines("10.0.1.0/24", "alpha/dev/MasqueradeRule/m")
        rules_b = masq_lines("192.168.1.0/24", "beta/dev/MasqueradeRule/m")
        assert sorted(nat_rules(lab_api, ns)) == sorted([FOREIGN_LINE, *rules_a, *rules_b])
        assert sysctl(lab_api, ns, "net.ipv4.ip_forward") == "1"
        both = host_snapshot(lab_api, ns)
        a.preview_no_changes()
        b.preview_no_changes()

        a.destroy()
        links = ip_links(lab_api, ns)
        assert not {"br-a", "vif1.0", "vif2.0"} & set(links)
        for name in ("br-b", "vif3.0", "vif4.0"):
            assert links[name] and name in both["links"]
            assert links[name]["ifindex"] == both["links"][name]["ifindex"]
            assert links[name]["ifalias"] == both["links"][name]["ifalias"]
        assert links["vif3.0"]["master"] == links["vif4.0"]["master"] == "br-b"
        assert ipv4_addresses(lab_api, ns, "br-b") == ["192.168.1.254/24"]
        assert sorted(nat_rules(lab_api, ns)) == sorted([FOREIGN_LINE, *rules_b])
        assert sysctl(lab_api, ns, "net.ipv4.ip_forward") == "1"  # beta still wants it
        b.preview_no_changes()  # beta sees nothing changed

        b.destroy()
        assert sysctl(lab_api, ns, "net.ipv4.ip_forward") == original_forwarding
        assert nat_rules(lab_api, ns) == [FOREIGN_LINE]
    finally:
        run_in(lab_api, ns, ["iptables-legacy", "-t", "nat", "-D", *FOREIGN_RULE], check=False)
    assert_same(pristine, host_snapshot(lab_api, ns))


def test_forwarding_already_on_stays_on(
    tmp_path: Path,
    lab_api: Lab,
    h1: HostStatus,
    pristine: dict[str, Any],
    stacks: list[TestStack],
) -> None:
    """The previous value is what is restored: a host that forwarded before still does."""
    ns = h1.namespace
    run_in(lab_api, ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    try:
        stack = TestStack(
            tmp_path,
            program(h1, 'ForwardingSetting("fw", ForwardingSettingArgs(connection=c))\n'),
            project="fwon",
        )
        stacks.append(stack)
        stack.up()
        assert stack.resources("kvmnet:ForwardingSetting")[0]["outputs"]["previous"] == {
            "ipv4": "1"
        }
        stack.destroy()
        assert sysctl(lab_api, ns, "net.ipv4.ip_forward") == "1"
    finally:
        run_in(lab_api, ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    assert_same(pristine, host_snapshot(lab_api, ns))


# --- ownership -------------------------------------------------------------------------------
def hand_bridge_program(adopt: bool) -> str:
    return (
        'br = Bridge("br", BridgeArgs(connection=c, name="br-hand", addresses=["10.7.0.1/24"], '
        f"adopt={adopt!r}))\n"
        'pulumi.export("ifindex", br.ifindex)\n'
    )


def test_foreign_bridge_is_refused_unless_adopted(
    tmp_path: Path,
    lab_api: Lab,
    h1: HostStatus,
    pristine: dict[str, Any],
    stacks: list[TestStack],
) -> None:
    ns = h1.namespace
    run_in(lab_api, ns, ["ip", "link", "add", "br-hand", "type", "bridge"])
    try:
        run_in(lab_api, ns, ["ip", "addr", "add", "10.7.0.9/24", "dev", "br-hand"])
        hand_made = host_snapshot(lab_api, ns)
        stack = TestStack(tmp_path, program(h1, hand_bridge_program(False)), project="own")
        stacks.append(stack)
        failed = stack.up(check=False)
        text = failed.stdout + failed.stderr
        assert failed.returncode != 0, text
        assert "br-hand already exists and belongs to something outside kvmnet" in text, text
        assert "adopt" in text, text
        assert_same(hand_made, host_snapshot(lab_api, ns))
        assert not stack.resources("kvmnet:Bridge")

        stack.set_program(program(h1, hand_bridge_program(True)))
        stack.up()
        link = ip_links(lab_api, ns)["br-hand"]
        assert link["ifindex"] == hand_made["links"]["br-hand"]["ifindex"]  # the same link
        assert link["ifalias"] == "kvmnet:own/dev/Bridge/br"
        assert ipv4_addresses(lab_api, ns, "br-hand") == ["10.7.0.1/24"]  # now managed
        assert stack.outputs()["ifindex"] == link["ifindex"]
        stack.preview_no_changes()
        stack.destroy()  # adopted, so released: given back what it had, not deleted
        assert_same(hand_made, host_snapshot(lab_api, ns))
    finally:
        run_in(lab_api, ns, ["ip", "link", "del", "br-hand"], check=False)
    assert_same(pristine, host_snapshot(lab_api, ns))


def test_other_stacks_bridge_is_never_taken(
    tmp_path: Path,
    lab_api: Lab,
    h1: HostStatus,
    pristine: dict[str, Any],
    stacks: list[TestStack],
) -> None:
    """Same bridge name in two stacks: the second is refused even with adopt=True."""
    ns = h1.namespace
    first = TestStack(tmp_path, program(h1, hand_bridge_program(False)), project="first")
    stacks.append(first)
    first.up()
    owned = host_snapshot(lab_api, ns)
    second = TestStack(tmp_path, program(h1, hand_bridge_program(True)), project="second")
    stacks.append(second)
    failed = second.up(check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0, text
    assert "belongs to kvmnet resource first/dev/Bridge/br" in text, text
    assert "another stack (first/dev) holds it: give this one another name" in text, text
    assert_same(owned, host_snapshot(lab_api, ns))
    second.destroy()
    assert_same(owned, host_snapshot(lab_api, ns))  # nothing of first's was deleted
    first.destroy()
    assert_same(pristine, host_snapshot(lab_api, ns))
