"""Adopting the bridge that carries a host's management address (real engine, lab): without
addresses the bridge keeps them, SSH stays in, no drift, and destroy gives it back exactly;
with a wrong address list, the host rolls the change back by itself and `up` fails in one
line, the host reachable and its addresses and routes exactly as before."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import host_props
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.lab.layouts import MGMT_BRIDGE, relaid
from kvmnet_lab.testing.operator import failed_up, link_state, operator_ssh, settle, ssh_run
from kvmnet_lab.testing.snapshot import host_snapshot
from kvmnet_lab.testing.stack import TestStack

pytestmark = pytest.mark.e2e

HOST = "h2"
ROLLBACK_SECONDS = 12
PROGRAM = f"""\
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources.links import Bridge, BridgeArgs

cfg = pulumi.Config("kvmnet")
bridge = Bridge(
    "mgmt",
    BridgeArgs(
        connection=HostSettings.from_props(cfg.require_object("host")),
        name="{MGMT_BRIDGE}",
        adopt=True,
        addresses=cfg.get_object("bridgeAddresses"),  # None: not given, kept
        rollback_seconds={ROLLBACK_SECONDS},
    ),
)
pulumi.export("ifindex", bridge.ifindex)
"""


@pytest.fixture()
def on_bridge(lab: LabStatus, lab_api: Lab) -> Iterator[None]:
    with relaid(lab_api, lab, HOST, "bridge"):
        yield


@pytest.fixture()
def stack(tmp_path: Path, lab: LabStatus, on_bridge: None) -> Iterator[TestStack]:
    stack = TestStack(tmp_path, PROGRAM, project="adopt")
    try:
        stack.config_values({"kvmnet:host": host_props(lab.host(HOST))})
        yield stack
    finally:
        stack.remove()


def test_adopt_without_addresses_keeps_them_and_destroy_gives_the_bridge_back(
    stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    before = link_state(lab_api, HOST, MGMT_BRIDGE)
    snapshot = host_snapshot(lab_api, lab_api.namespace(HOST))
    address = lab.host(HOST).address
    operator = operator_ssh(lab, HOST)  # a session that arrives on the bridge's address
    try:
        stack.up()
        assert address in ssh_run(operator, f"ip -br addr show {MGMT_BRIDGE}")  # it survived
    finally:
        operator.close()
    assert link_state(lab_api, HOST, MGMT_BRIDGE) == before  # addresses and routes untouched
    with operator_ssh(lab, HOST) as again:
        link = json.loads(ssh_run(again, f"ip -j link show {MGMT_BRIDGE}"))[0]
        assert link.get("ifalias", "").startswith("kvmnet:adopt/"), link  # managed now
        assert stack.outputs()["ifindex"] == link["ifindex"]  # the same bridge
    stack.refresh()
    stack.preview_no_changes()  # the kept addresses are no drift
    stack.destroy()
    settle(lab_api, HOST, MGMT_BRIDGE, before, snapshot)  # released, not deleted: as it was


def test_adopt_with_an_added_address_keeps_ssh_and_the_release_takes_it_back(
    stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    """A change that keeps the host reachable: confirmed by a new login, and the release
    (under the same rollback) gives back exactly the addresses and routes of before."""
    before = link_state(lab_api, HOST, MGMT_BRIDGE)
    snapshot = host_snapshot(lab_api, lab_api.namespace(HOST))
    address = f"{lab.host(HOST).address}/{ipaddress.ip_network(lab.lan).prefixlen}"
    stack.config_values({"kvmnet:bridgeAddresses": [address, "10.77.0.1/24"]})
    stack.up()
    with operator_ssh(lab, HOST) as again:
        on_bridge = ssh_run(again, f"ip -br addr show {MGMT_BRIDGE}")
        assert address in on_bridge and "10.77.0.1/24" in on_bridge, on_bridge
        assert "default via" in ssh_run(again, f"ip route show dev {MGMT_BRIDGE}")
    stack.refresh()
    stack.preview_no_changes()
    stack.destroy()
    settle(lab_api, HOST, MGMT_BRIDGE, before, snapshot)


def test_adopt_with_a_wrong_address_list_is_rolled_back(
    stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    before = link_state(lab_api, HOST, MGMT_BRIDGE)
    snapshot = host_snapshot(lab_api, lab_api.namespace(HOST))
    lan = ipaddress.ip_network(lab.lan)
    wrong = f"{lan.network_address + 77}/{lan.prefixlen}"  # not the address SSH arrives on
    stack.config_values({"kvmnet:bridgeAddresses": [wrong]})
    text, took = failed_up(stack)
    fragments = (lab.host(HOST).address, MGMT_BRIDGE, "cut the host off", "rolled back: ok")
    assert [line for line in text.splitlines() if all(f in line for f in fragments)], text
    assert took < 120, took
    with operator_ssh(lab, HOST) as again:  # reachable on its own address again
        assert lab.host(HOST).address in ssh_run(again, f"ip -br addr show {MGMT_BRIDGE}")
    # Routes exactly as before, and the bridge not ours.
    settle(lab_api, HOST, MGMT_BRIDGE, before, snapshot)
    assert not stack.resources("kvmnet:Bridge")
