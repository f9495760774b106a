"""Two stacks of the same project and stack name, each with its own backend (its own state),
on one lab host, through the real engine: their owner marks differ by each state's stack id,
so neither sees the other's objects as its own drift, neither's destroy touches the other's,
and an object of the same host-side name as the other's is refused, not adopted or deleted.

Both stacks declare the same resource names (`fw`, `m`, `br`, `t`): without the stack id their
forwarding holder and masquerade rules would carry one mark, and the first destroy would take
the other's away. The host is read inside its namespace (kvmnet_lab.testing.snapshot), never
with the code under test.
"""

from __future__ import annotations

import json
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

PROJECT, STACK = "twin", "dev"


def program(host: HostStatus, bridge: str, tap: str, subnet: str, gateway: str) -> str:
    """One network of a bridge, a tap, forwarding and a masquerade, by the same resource
    names in every stack."""
    return textwrap.dedent(
        f"""
        import pulumi
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources import *

        c = HostSettings(host={host.address!r}, known_hosts={host.known_hosts!r},
                         private_key_path={host.private_key!r}, python={sys.executable!r},
                         firewall_backend="iptables")
        br = Bridge("br", BridgeArgs(connection=c, name={bridge!r}, addresses=[{gateway!r}]))
        TapPort("t", TapPortArgs(connection=c, name={tap!r}, bridge=br))
        ForwardingSetting("fw", ForwardingSettingArgs(connection=c))
        MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source={subnet!r}))
        """
    )


def bridge_only(host: HostStatus, bridge: str, autostart: bool | None = None) -> str:
    return textwrap.dedent(
        f"""
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources import *

        c = HostSettings(host={host.address!r}, known_hosts={host.known_hosts!r},
                         private_key_path={host.private_key!r}, python={sys.executable!r})
        Bridge("br", BridgeArgs(connection=c, name={bridge!r}, autostart={autostart!r}))
        """
    )


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after == before, "host changed:\n" + "\n".join(diff_snapshots(before, after))


def ifalias(lab_api: Lab, ns: str, name: str) -> str:
    (link,) = json.loads(run_in(lab_api, ns, ["ip", "-j", "-d", "link", "show", "dev", name]))
    return str(link.get("ifalias"))


def nat_rules(lab_api: Lab, ns: str) -> str:
    return run_in(lab_api, ns, ["iptables-legacy-save", "-t", "nat"])


def refresh_sees_nothing(stack: TestStack) -> None:
    refreshed = stack.pulumi("refresh", "--yes", "--expect-no-changes", "--diff")
    assert " updated" not in refreshed.stdout and " deleted" not in refreshed.stdout, (
        refreshed.stdout
    )
    stack.preview_no_changes()


@pytest.fixture
def h1(lab: LabStatus) -> HostStatus:
    return lab.hosts[0]


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[list[TestStack]]:
    """The stacks a test makes, each in a directory and backend of its own; destroyed and
    removed at the end, whatever happened."""
    made: list[TestStack] = []
    yield made
    for stack in reversed(made):
        stack.remove()


def test_two_stacks_of_one_name_keep_to_their_own(
    tmp_path: Path, lab_api: Lab, h1: HostStatus, twins: list[TestStack]
) -> None:
    ns = h1.namespace
    pristine = host_snapshot(lab_api, ns)
    prog_a = program(h1, "br-twa", "vif31.0", "10.0.31.0/24", "10.0.31.1/24")
    prog_b = program(h1, "br-twb", "vif32.0", "10.0.32.0/24", "10.0.32.1/24")
    b = TestStack(tmp_path / "b", prog_b, project=PROJECT, stack=STACK)
    twins.append(b)
    a = TestStack(tmp_path / "a", prog_a, project=PROJECT, stack=STACK)
    twins.append(a)
    assert a.ws.root != b.ws.root  # two backends: two states

    b.up()
    only_b = host_snapshot(lab_api, ns)
    a.up()
    assert a.stack_id() != b.stack_id()
    for stack, bridge in ((a, "br-twa"), (b, "br-twb")):
        mark = stack.mark("Bridge", "br")
        assert mark.startswith(f"{PROJECT}/{STACK}@{stack.stack_id()}/"), mark
        assert ifalias(lab_api, ns, bridge) == "kvmnet:" + mark
        assert "kvmnet:" + stack.mark("MasqueradeRule", "m") in nat_rules(lab_api, ns)

    # Each one's refresh and preview: nothing of the other's is taken for its own drift.
    refresh_sees_nothing(a)
    refresh_sees_nothing(b)

    # a's destroy leaves the host exactly as b alone had it (b's forwarding holder included).
    a.destroy()
    assert_same(only_b, host_snapshot(lab_api, ns))
    refresh_sees_nothing(b)

    # A first preview, the stack's id not made yet: the owners are unknown, and that is fine.
    a.set_program(bridge_only(h1, "br-twb"))
    preview = a.preview()
    assert "to create" in preview.stdout, preview.stdout

    # The same bridge name as b's, from the stack of the same name: refused in one line,
    # b's bridge neither adopted nor deleted, before and after a's destroy.
    failed = a.up(check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0, text
    assert "Traceback" not in text, text
    refusals = [line for line in text.splitlines() if "br-twb already exists" in line]
    assert refusals, text
    expected = (
        f"belongs to kvmnet resource {b.mark('Bridge', 'br')}; kvmnet will not take it over: "
        f"another stack of the same name ({PROJECT}/{STACK}, stack id {b.stack_id()}: "
        "another backend or organisation) holds it"
    )
    assert expected in refusals[0], refusals[0]
    assert_same(only_b, host_snapshot(lab_api, ns))
    assert not a.resources("kvmnet:Bridge")
    a.destroy()
    assert_same(only_b, host_snapshot(lab_api, ns))
    refresh_sees_nothing(b)

    b.destroy()
    assert_same(pristine, host_snapshot(lab_api, ns))


def as_before_stack_ids(state: dict[str, Any], legacy: str) -> dict[str, Any]:
    """The stack's state as kvmnet wrote it before stack ids: the bridge's old mark, and no
    StackIdentity (nor any dependency on it)."""
    resources = state["deployment"]["resources"]
    gone = {r["urn"] for r in resources if r["type"].endswith("kvmnet:StackIdentity")}
    kept = []
    for resource in resources:
        if resource["urn"] in gone:
            continue
        if resource["type"].endswith("kvmnet:Bridge"):
            resource["inputs"]["owner"] = resource["outputs"]["owner"] = legacy
        resource["dependencies"] = [d for d in resource.get("dependencies") or [] if d not in gone]
        by_property = resource.get("propertyDependencies") or {}
        for name, urns in by_property.items():
            by_property[name] = [d for d in urns if d not in gone]
        kept.append(resource)
    state["deployment"]["resources"] = kept
    return state


def test_a_state_with_marks_from_before_stack_ids_keeps_them(
    tmp_path: Path, lab_api: Lab, h1: HostStatus, twins: list[TestStack]
) -> None:
    """An upgrade: a bridge whose state and host hold the old mark. The preview adds the
    StackIdentity and nothing else; up keeps the bridge's mark (no update, no replacement),
    refresh finds it its own, and destroy deletes it."""
    ns = h1.namespace
    pristine = host_snapshot(lab_api, ns)
    old = TestStack(tmp_path / "old", bridge_only(h1, "br-twold", autostart=False), PROJECT, STACK)
    twins.append(old)
    old.up()
    legacy = f"{PROJECT}/{STACK}/Bridge/br"
    run_in(lab_api, ns, ["ip", "link", "set", "dev", "br-twold", "alias", "kvmnet:" + legacy])
    state_file = tmp_path / "before-stack-ids.json"
    state_file.write_text(json.dumps(as_before_stack_ids(old.export(), legacy)))
    old.pulumi("stack", "import", "--file", str(state_file))
    made = host_snapshot(lab_api, ns)

    preview = old.preview()
    assert "+ 1 to create" in preview.stdout, preview.stdout  # the StackIdentity
    assert "to update" not in preview.stdout and "to replace" not in preview.stdout, (
        preview.stdout
    )
    up = old.up()
    assert "created" in up.stdout and "updated" not in up.stdout, up.stdout
    (bridge,) = old.resources("kvmnet:Bridge")
    assert bridge["inputs"]["owner"] == bridge["outputs"]["owner"] == legacy
    assert "legacy_owner" not in bridge["inputs"]
    assert ifalias(lab_api, ns, "br-twold") == "kvmnet:" + legacy
    assert_same(made, host_snapshot(lab_api, ns))
    refresh_sees_nothing(old)
    old.destroy()
    assert_same(pristine, host_snapshot(lab_api, ns))
