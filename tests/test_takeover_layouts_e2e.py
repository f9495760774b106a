"""The bridged model's takeover on hosts laid out as rented servers are (real engine, lab):
`up` keeps SSH in, `destroy` gives the NIC back exactly, and a bridge address that cuts the
host off is undone, leaving the NIC's addresses and every route exactly as they were."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from kvmnet_lab.hostconfig import host_props
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.lab.layouts import LAYOUTS, ROUTER_LINK_LOCAL, relaid, ula, wait_dad
from kvmnet_lab.lab.sshclient import open_client
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
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


def ssh(lab: LabStatus) -> paramiko.SSHClient:
    host = lab.host(HOST)
    return open_client(host.address, host.port, host.user, host.private_key, host.known_hosts)


def run(client: paramiko.SSHClient, command: str) -> str:
    _, out, _ = client.exec_command(command, timeout=10)
    return str(out.read().decode())


def nic_state(lab_api: Lab) -> dict[str, Any]:
    """`ip -j` of the NIC's addresses and of every route, as the kernel lists them (order
    included: the first address of a subnet is its primary)."""
    ns = lab_api.namespace(HOST)
    wait_dad(lab_api, ns)

    def ip_json(*args: str) -> Any:
        return json.loads(run_in(lab_api, ns, ["ip", "-j", *args]) or "[]")

    return {
        "addr": ip_json("addr", "show", "dev", "eth0"),
        "route": ip_json("-4", "route", "show", "table", "all"),
        "route6": ip_json("-6", "route", "show", "table", "all"),
    }


def settle(lab_api: Lab, before: dict[str, Any], snapshot: dict[str, Any]) -> None:
    """The host exactly as before; a rollback process that was just heard may take a moment
    to leave."""
    deadline, ns = time.monotonic() + 10, lab_api.namespace(HOST)
    while True:
        now_state, now_snapshot = nic_state(lab_api), host_snapshot(lab_api, ns)
        if (now_state == before and not diff_snapshots(snapshot, now_snapshot)) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)
    assert now_state == before
    assert diff_snapshots(snapshot, now_snapshot) == []


def wrong_address(lab: LabStatus, layout: str) -> str:
    """A bridge address the operator cannot reach the host on."""
    prefix = 32 if layout == "slash32" else ipaddress.ip_network(lab.lan).prefixlen
    return f"{ipaddress.ip_network(lab.lan).network_address + 77}/{prefix}"


def test_takeover_keeps_ssh_in_and_destroy_gives_the_nic_back(
    stack: TestStack, layout: str, lab: LabStatus, lab_api: Lab
) -> None:
    before = nic_state(lab_api)
    snapshot = host_snapshot(lab_api, lab_api.namespace(HOST))
    moved = [a["local"] for a in before["addr"][0]["addr_info"] if a["scope"] == "global"]
    operator = ssh(lab)  # a session over the very NIC that is about to be bridged
    try:
        stack.up()
        assert "br-up" in run(operator, "ip -br link show br-up")  # the session survived
    finally:
        operator.close()
    with ssh(lab) as again:  # and new sessions get in
        eth0 = json.loads(run(again, "ip -j link show eth0"))[0]
        assert eth0.get("master") == BRIDGE, eth0
        on_bridge = run(again, f"ip -br addr show {BRIDGE}")
        assert all(address in on_bridge for address in moved), (moved, on_bridge)
        routes = run(again, f"ip route show dev {BRIDGE}; ip -6 route show dev {BRIDGE}")
        assert "default via" in routes, routes
        if layout == "slash32":
            assert f"{lab.gateway} scope link" in routes, routes
        if layout == "onlink":
            assert "onlink" in routes, routes
        if layout == "ipv6":
            assert f"default via {ROUTER_LINK_LOCAL}" in routes, routes
            # The IPv6 address works on the bridge: the LAN's router answers it.
            ping = f"ping -6 -c1 -W3 {ula(lab, 0xFE)}; echo rc=$?"
            assert "rc=0" in run(again, ping), run(again, ping)
    stack.preview_no_changes()
    stack.destroy()
    settle(lab_api, before, snapshot)


def test_bridge_address_that_cuts_ssh_is_undone_exactly(
    stack: TestStack, layout: str, lab: LabStatus, lab_api: Lab
) -> None:
    before = nic_state(lab_api)
    snapshot = host_snapshot(lab_api, lab_api.namespace(HOST))
    stack.pulumi("config", "set", "--path", "kvmnet:bridgeAddresses[0]", wrong_address(lab, layout))
    started = time.monotonic()
    failed = stack.up(check=False)
    took = time.monotonic() - started
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0, text
    assert "Traceback" not in text, text
    if layout == "several":
        # The route through the other subnet's gateway cannot be made without its address:
        # refused at once, undone at once, and the undo seen to work by a new login.
        assert "undone at once" in text and "198.19." in text, text
    else:
        assert "cut the host off" in text and "rolled back: ok" in text, text
    assert took < 120
    with ssh(lab) as again:
        assert lab.host(HOST).address in run(again, "ip -br addr show eth0")
    settle(lab_api, before, snapshot)
    assert not stack.resources("UplinkBridge")
