"""The bridged model's takeover on hosts laid out as rented servers are (real engine, lab):
`up` keeps SSH in, `destroy` gives the NIC back exactly, and a bridge address that cuts the
host off is undone, leaving the NIC's addresses and every route exactly as they were."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import host_props
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.lab.layouts import LAYOUTS, ROUTER_LINK_LOCAL, relaid, ula
from kvmnet_lab.testing.operator import failed_up, link_state, operator_ssh, settle, ssh_run
from kvmnet_lab.testing.snapshot import host_snapshot
from kvmnet_lab.testing.stack import TestStack

pytestmark = pytest.mark.e2e

HOST = "h2"
BRIDGE = "br-up"
ROLLBACK_SECONDS = 12
PROGRAM = """\
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources.uplink import UplinkBridge, UplinkBridgeArgs

cfg = pulumi.Config("kvmnet")
bridge = UplinkBridge(
    "uplink",
    UplinkBridgeArgs(
        connection=HostSettings.from_props(cfg.require_object("host")),
        name="br-up",
        nic="eth0",
        addresses=cfg.get_object("bridgeAddresses") or [],
        rollback_seconds=cfg.get_int("rollbackSeconds") or 12,
    ),
)
pulumi.export("live_addresses", bridge.live_addresses)
"""


@pytest.fixture(params=LAYOUTS)
def layout(request: pytest.FixtureRequest, lab: LabStatus, lab_api: Lab) -> Iterator[str]:
    with relaid(lab_api, lab, HOST, request.param):
        yield str(request.param)


@pytest.fixture()
def stack(tmp_path: Path, lab: LabStatus, layout: str) -> Iterator[TestStack]:
    stack = TestStack(tmp_path, PROGRAM, project="takeover", stack=layout)
    try:
        stack.config_values(
            {
                "kvmnet:host": host_props(lab.host(HOST)),
                "kvmnet:rollbackSeconds": ROLLBACK_SECONDS,
            }
        )
        yield stack
    finally:
        stack.remove()


def wrong_address(lab: LabStatus, layout: str) -> str:
    """A bridge address the operator cannot reach the host on."""
    prefix = 32 if layout == "slash32" else ipaddress.ip_network(lab.lan).prefixlen
    return f"{ipaddress.ip_network(lab.lan).network_address + 77}/{prefix}"


def test_takeover_keeps_ssh_in_and_destroy_gives_the_nic_back(
    stack: TestStack, layout: str, lab: LabStatus, lab_api: Lab
) -> None:
    before = link_state(lab_api, HOST, "eth0")
    snapshot = host_snapshot(lab_api, lab_api.namespace(HOST))
    moved = [a["local"] for a in before["addr"][0]["addr_info"] if a["scope"] == "global"]
    operator = operator_ssh(lab, HOST)  # a session over the very NIC that is about to be bridged
    try:
        stack.up()
        assert "br-up" in ssh_run(operator, "ip -br link show br-up")  # the session survived
    finally:
        operator.close()
    with operator_ssh(lab, HOST) as again:  # and new sessions get in
        eth0 = json.loads(ssh_run(again, "ip -j link show eth0"))[0]
        assert eth0.get("master") == BRIDGE, eth0
        on_bridge = ssh_run(again, f"ip -br addr show {BRIDGE}")
        assert all(address in on_bridge for address in moved), (moved, on_bridge)
        routes = ssh_run(again, f"ip route show dev {BRIDGE}; ip -6 route show dev {BRIDGE}")
        assert "default via" in routes, routes
        if layout == "slash32":
            assert f"{lab.gateway} scope link" in routes, routes
        if layout == "onlink":
            assert "onlink" in routes, routes
        if layout == "ipv6":
            assert f"default via {ROUTER_LINK_LOCAL}" in routes, routes
            # The IPv6 address works on the bridge: the LAN's router answers it.
            ping = f"ping -6 -c1 -W3 {ula(lab, 0xFE)}; echo rc=$?"
            assert "rc=0" in ssh_run(again, ping), ssh_run(again, ping)
    stack.preview_no_changes()
    stack.destroy()
    settle(lab_api, HOST, "eth0", before, snapshot)


def test_bridge_address_that_cuts_ssh_is_undone_exactly(
    stack: TestStack, layout: str, lab: LabStatus, lab_api: Lab
) -> None:
    before = link_state(lab_api, HOST, "eth0")
    snapshot = host_snapshot(lab_api, lab_api.namespace(HOST))
    stack.pulumi("config", "set", "--path", "kvmnet:bridgeAddresses[0]", wrong_address(lab, layout))
    text, took = failed_up(stack)
    if layout == "several":
        # The route through the other subnet's gateway cannot be made without its address:
        # refused at once, undone at once, and the undo seen to work by a new login.
        assert "undone at once" in text and "198.19." in text, text
    else:
        assert "cut the host off" in text and "rolled back: ok" in text, text
    assert took < 120
    with operator_ssh(lab, HOST) as again:
        assert lab.host(HOST).address in ssh_run(again, "ip -br addr show eth0")
    settle(lab_api, HOST, "eth0", before, snapshot)
    assert not stack.resources("UplinkBridge")
