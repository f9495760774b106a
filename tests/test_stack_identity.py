"""Owner marks carry the stack's own id (StackIdentity, kept in its state): two stacks of the
same project and stack name never share a mark, and a resource whose state holds a mark from
before stack ids keeps it: no diff, no replacement, its objects read and delete as before."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from program_mocks import STACK_ID, Recording, ensure_event_loop

from kvmnet_provider import HostSettings
from kvmnet_provider.agent.errors import held_fix
from kvmnet_provider.resources import identity, links, netfilter, stack_identity
from kvmnet_provider.resources.base import UNKNOWN, kept_owner
from kvmnet_provider.spec import marks, validate

CONN = HostSettings(host="10.9.0.1").to_props()
OTHER_ID = "fedcba9876543210"
LEGACY = "kvmnet/dev/Bridge/net-bridge"
NEW = f"kvmnet/dev@{STACK_ID}/Bridge/net-bridge"


def _news(owner: Any, **fields: Any) -> dict[str, Any]:
    return {"connection": CONN, "owner": owner, "legacy_owner": LEGACY, "name": "br-in", **fields}


# --- the mark ------------------------------------------------------------------------------
def test_the_mark_names_the_stack_with_its_id() -> None:
    assert identity.stack_owner_mark("kvmnet", "dev", STACK_ID, "Bridge", "net-bridge") == NEW
    assert identity.legacy_owner_mark("kvmnet", "dev", "Bridge", "net-bridge") == LEGACY
    assert validate.owner(NEW) == NEW
    assert marks.stack_of(NEW) == ("kvmnet/dev", STACK_ID)
    assert marks.stack_of(LEGACY) == ("kvmnet/dev", None)
    assert marks.without_stack_id(NEW) == LEGACY
    assert marks.without_stack_id(LEGACY) == LEGACY
    with pytest.raises(ValueError):
        identity.stack_owner_mark("kvmnet", "dev", "not-hex", "Bridge", "b")


def test_marks_of_two_stacks_of_one_name_differ_and_stay_injective() -> None:
    names = ["br", "br x", "br_x", "a@" + "0" * 16, "a" * 300, "a" * 299 + "b"]
    made = [
        identity.stack_owner_mark("p", "s", sid, "Bridge", n)
        for sid in (STACK_ID, OTHER_ID)
        for n in names
    ] + [identity.legacy_owner_mark("p", "s", "Bridge", n) for n in names]
    assert len(set(made)) == len(made)
    for mark in made:
        assert validate.owner(mark) == mark  # the agent's rule: 1-200 safe characters
    long_mark = identity.stack_owner_mark("p", "s", STACK_ID, "Bridge", "a" * 300)
    assert marks.stack_of(long_mark) == ("p/s", STACK_ID)  # the id is in a hashed mark's head


def test_a_firewall_resource_id_reads_as_before() -> None:
    provider = netfilter.MasqueradeRuleProvider()
    props = {"connection": CONN, "owner": "kvmnet/dev@" + STACK_ID + "/MasqueradeRule/m"}
    assert provider.resource_id(props) == "10.9.0.1:22/masquerade/kvmnet/dev/MasqueradeRule/m"


# --- upgrade: a state with marks from before stack ids -------------------------------------
@pytest.mark.parametrize("new_owner", [NEW, UNKNOWN], ids=["known", "preview of the upgrade"])
def test_a_resource_with_an_old_mark_keeps_it(new_owner: str) -> None:
    """An old state holds the old mark: check keeps it (also at the upgrade's preview, when
    the new StackIdentity's id is unknown), diff sees no change, nothing is replaced."""
    provider = links.BridgeProvider()
    olds_inputs = provider.check({}, _news(LEGACY)).inputs  # as made before stack ids
    assert olds_inputs["owner"] == LEGACY
    checked = provider.check(olds_inputs, _news(new_owner))
    assert not checked.failures
    assert checked.inputs["owner"] == LEGACY
    assert "legacy_owner" not in checked.inputs  # never in the state
    olds_outputs = {**olds_inputs, "ifindex": 7, "mac": "02:00:00:00:00:01"}
    diff = provider.diff("id", olds_outputs, checked.inputs)
    assert not diff.changes and not diff.replaces


def test_a_new_resource_gets_the_new_mark_and_keeps_it() -> None:
    provider = links.BridgeProvider()
    made = provider.check({}, _news(NEW)).inputs
    assert made["owner"] == NEW
    again = provider.check(made, _news(NEW)).inputs
    assert again["owner"] == NEW
    assert not provider.diff("id", made, again).changes


def test_another_stack_id_is_another_owner() -> None:
    """Only the old form of the same project/stack/kind/name is kept; a state whose mark has
    another stack's id is not this resource's (its StackIdentity was made anew): replaced."""
    provider = links.BridgeProvider()
    theirs = f"kvmnet/dev@{OTHER_ID}/Bridge/net-bridge"
    checked = provider.check(provider.check({}, _news(theirs)).inputs, _news(NEW))
    assert checked.inputs["owner"] == NEW
    assert "owner" in (provider.diff("id", {**_news(theirs)}, checked.inputs).replaces or [])
    # an old mark of another name is not kept either
    assert kept_owner({"owner": "kvmnet/dev/Bridge/other"}, _news(NEW))["owner"] == NEW


def test_an_old_mark_still_reads_and_deletes_as_its_own() -> None:
    """Read and delete send the state's owner to the agent as they always did."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class Agent:
        def call(self, op: str, args: dict[str, Any], timeout: float = 120.0) -> Any:
            calls.append((op, args))
            return {"count": 1, "ipv4": "1", "held": True, "holders": 1, "previous": {}}

    provider = netfilter.ForwardingSettingProvider()
    props = {
        "connection": CONN,
        "owner": "kvmnet/dev/ForwardingSetting/f",
        "ipv4": True,
        "ipv6": False,
    }
    provider.host_read(Agent(), props)  # type: ignore[arg-type]
    provider.host_delete(Agent(), props)  # type: ignore[arg-type]
    assert [args["owner"] for _, args in calls] == ["kvmnet/dev/ForwardingSetting/f"] * 2
    assert provider.resource_id(props) == "10.9.0.1:22/forwarding/kvmnet/dev/ForwardingSetting/f"


# --- refusals ------------------------------------------------------------------------------
def test_a_refusal_tells_a_stack_of_the_same_name_from_this_one() -> None:
    theirs = f"kvmnet/dev@{OTHER_ID}/Bridge/net-bridge"
    fix = held_fix(theirs, NEW)
    assert fix.startswith(f"another stack of the same name (kvmnet/dev, stack id {OTHER_ID}:")
    assert "destroy that stack's first" in fix
    assert held_fix(NEW, f"kvmnet/dev@{STACK_ID}/Bridge/b2").startswith("it is this stack's own")
    assert held_fix(LEGACY, NEW).startswith("it is this stack's own")  # made before stack ids
    assert held_fix(f"kvmnet/prod@{OTHER_ID}/Bridge/b", NEW).startswith(
        "another stack (kvmnet/prod) holds it"
    )


# --- the StackIdentity resource ------------------------------------------------------------
def test_the_stack_identity_is_made_once_and_never_changes() -> None:
    provider = stack_identity.StackIdentityProvider()
    made = provider.create({"stack_id": None})
    assert marks.STACK_ID.fullmatch(made.id)
    assert made.outs == {"stack_id": made.id}
    assert provider.create({}).id != made.id
    assert provider.diff(made.id, made.outs, {"stack_id": None}).changes is False
    assert provider.read(made.id, made.outs).outs == made.outs


@pulumi.runtime.test
def test_a_program_declares_one_stack_identity_and_marks_with_its_id() -> Any:
    from kvmnet_provider import NatNetwork, NetworkArgs

    ensure_event_loop()
    mocks = Recording()
    pulumi.runtime.set_mocks(mocks, project="kvt", stack="dev", preview=False)
    host = HostSettings(host="10.9.0.1")
    net = NatNetwork(
        "net",
        NetworkArgs(connection=host, bridge="br-in", subnet="10.0.1.0/24", gateway="10.0.1.1"),
    )
    other = links.Bridge("b2", links.BridgeArgs(host, "br-two"))

    def check(owners: list[str]) -> None:
        kinds = [typ for typ, _, _ in mocks.made]
        assert kinds.count("pulumi-python:dynamic/kvmnet:StackIdentity") == 1
        assert owners == [
            f"kvt/dev@{STACK_ID}/Bridge/net-bridge",
            f"kvt/dev@{STACK_ID}/Bridge/b2",
        ]
        made = {name: inputs for _, name, inputs in mocks.made}
        assert made["net-bridge"]["legacy_owner"] == "kvt/dev/Bridge/net-bridge"
        # The network's check names its rules by the rules' own owner (kept when older)
        rules = made["net-verify"]["rules"]
        assert rules["owner"] == made["net-forward-rules"]["owner"]
        assert made["net-verify"]["input_rules"]["owner"] == made["net-dhcp"]["owner"]

    assert net.check is not None
    return pulumi.Output.all(net.bridge.owner, other.owner, net.check.id).apply(
        lambda v: check(v[:2])
    )
