"""The bridged model on a lab host whose only NIC carries the SSH session: real engine,
real guests, and the rollback that saves a host a bad change would have cut off."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.probe import EXPECTED, GuestEndpoint, Outside, observe
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.operator import operator_ssh, ssh_run
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
from kvmnet_lab.testing.stack import TestStack, config_stack

pytestmark = pytest.mark.e2e

HOST = "h2"  # the models' tests use h1


@pytest.fixture()
def bridged_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    config = lab_stack_config(lab, "bridged", host=HOST, image_dir=guest_image_dir())
    config |= {"kvmnet:accelerator": "tcg", "kvmnet:rollbackSeconds": "12"}
    with config_stack(tmp_path, "bridged", config) as stack:
        yield stack


def test_bridged_model_end_to_end(bridged_stack: TestStack, lab: LabStatus, lab_api: Lab) -> None:
    host = lab.host(HOST)
    before = host_snapshot(lab_api, host.namespace)
    operator = operator_ssh(lab, HOST)  # a session over the very NIC that is about to be bridged
    try:
        bridged_stack.up()
        # The operator's session survived: same address, same MAC, now on the bridge.
        assert host.address in ssh_run(operator, "ip -br addr show br-in")
    finally:
        operator.close()
    with operator_ssh(lab, HOST) as again:  # and new sessions get in
        eth0 = json.loads(ssh_run(again, "ip -j link show eth0"))[0]
        assert eth0.get("master") == "br-in", eth0  # the NIC is now a port of the bridge
        assert host.address in ssh_run(again, "ip -br addr show br-in")
        assert "default via" in ssh_run(again, "ip route show dev br-in")

    outs = bridged_stack.outputs()
    guests = [
        GuestEndpoint(n, g["address"], g["console"]) for n, g in sorted(outs["guests"].items())
    ]
    for guest in guests:
        assert ipaddress.ip_address(guest.address) in ipaddress.ip_network(lab.lan)
    outside = Outside(lab.ext.namespace, lab.ext.address, lab.ext.echo_port)
    observed = observe(guests, None, host.address, outside).as_dict()
    assert observed == EXPECTED["bridged"]  # ext saw the guest's own LAN address, reached it

    bridged_stack.preview_no_changes()

    # Drift: someone hands eth0 its address back and takes it out of the bridge.
    lab_api.exec_in(host.namespace, ["ip", "link", "set", "eth0", "nomaster"], check=True)
    lab_api.exec_in(
        host.namespace, ["ip", "addr", "del", f"{host.address}/24", "dev", "br-in"], check=True
    )
    lab_api.exec_in(
        host.namespace, ["ip", "addr", "add", f"{host.address}/24", "dev", "eth0"], check=True
    )
    lab_api.exec_in(
        host.namespace, ["ip", "route", "replace", "default", "via", lab.gateway], check=True
    )
    refresh = bridged_stack.refresh()
    assert "updated" in refresh.stdout, refresh.stdout
    assert "nic-not-a-port" in str(bridged_stack.resources("UplinkBridge")[0]["outputs"])
    assert "~ 1 to update" in bridged_stack.preview().stdout
    bridged_stack.up()
    with operator_ssh(lab, HOST) as again:
        assert host.address in ssh_run(again, "ip -br addr show br-in")
    bridged_stack.preview_no_changes()

    bridged_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []


def test_change_that_cuts_the_host_off_rolls_back(
    bridged_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host = lab.host(HOST)
    before = host_snapshot(lab_api, host.namespace)
    wrong = str(ipaddress.ip_network(lab.lan).network_address + 77) + "/24"
    bridged_stack.pulumi("config", "set", "--path", "kvmnet:bridgeAddresses[0]", wrong)
    started = time.monotonic()
    failed = bridged_stack.up(check=False)
    took = time.monotonic() - started
    assert failed.returncode != 0
    text = failed.stdout + failed.stderr
    assert "cut the host off" in text and "restored its previous configuration" in text, text
    assert "rolled back: ok" in text, text
    assert "Traceback" not in text, text  # one line, not a Python traceback
    assert took < 120
    # Reachable on its original address, exactly as before.
    with operator_ssh(lab, HOST) as again:
        assert host.address in ssh_run(again, "ip -br addr show eth0")
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []
    assert not bridged_stack.resources("UplinkBridge")


def test_preview_refuses_a_missing_nic_or_another_bridges_port(
    bridged_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host = lab.host(HOST)
    before = host_snapshot(lab_api, host.namespace)
    bridged_stack.config("kvmnet:uplink", "eth9")
    missing = bridged_stack.preview(check=False)
    assert missing.returncode != 0
    assert "nic: NIC eth9 does not exist" in missing.stdout + missing.stderr

    for argv in (
        ["ip", "link", "add", "kvtport0", "type", "veth", "peer", "name", "kvtpeer0"],
        ["ip", "link", "add", "kvtbr0", "type", "bridge"],
        ["ip", "link", "set", "kvtport0", "master", "kvtbr0"],
    ):
        lab_api.exec_in(host.namespace, argv, check=True)
    try:
        bridged_stack.config("kvmnet:uplink", "kvtport0")
        taken = bridged_stack.preview(check=False)
        assert taken.returncode != 0
        assert "is already a port of bridge kvtbr0" in taken.stdout + taken.stderr
    finally:
        for link in ("kvtport0", "kvtbr0"):
            lab_api.exec_in(host.namespace, ["ip", "link", "del", link])
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []


def links_of(lab_api: Lab, ns: str) -> dict[str, dict[str, Any]]:
    out = run_in(lab_api, ns, ["ip", "-j", "link", "show"])
    return {link["ifname"]: link for link in json.loads(out)}


def as_before_the_ifindex(state: dict[str, Any]) -> dict[str, Any]:
    """The stack's state as kvmnet wrote it before an UplinkBridge's id named its ifindex and
    its taps recorded that id."""
    for resource in state["deployment"]["resources"]:
        if resource["type"].endswith("UplinkBridge"):
            resource["id"] = resource["id"].rsplit("@", 1)[0]
            resource["outputs"].pop("ifindex", None)
        if resource["type"].endswith("TapPort"):
            for props in (resource["inputs"], resource["outputs"]):
                props.pop("bridge_id", None)
    return state


def test_taps_join_their_uplink_bridge_again_when_it_is_replaced(
    bridged_stack: TestStack, lab: LabStatus, lab_api: Lab, tmp_path: Path
) -> None:
    """As a Bridge's: the UplinkBridge made anew (`--replace`: the NIC released, then taken
    over again) leaves the kernel's taps detached; they follow its new id, so preview shows
    them updated and `up` joins them to it again. State from before the id named the
    ifindex previews without a change."""
    host = lab.host(HOST)
    before = host_snapshot(lab_api, host.namespace)
    bridged_stack.up()
    built = links_of(lab_api, host.namespace)
    taps = sorted(n for n, link in built.items() if link.get("master") == "br-in" and n != "eth0")
    assert len(taps) == 2, built
    (uplink,) = bridged_stack.resources("UplinkBridge")
    assert uplink["id"].endswith(f"<eth0@{built['br-in']['ifindex']}"), uplink["id"]
    preview = bridged_stack.pulumi("preview", "--diff", "--replace", uplink["urn"])
    assert "1 to replace" in preview.stdout and "2 to update" in preview.stdout, preview.stdout
    up = bridged_stack.pulumi("up", "--yes", "--skip-preview", "--replace", uplink["urn"])
    assert "1 replaced" in up.stdout and "2 updated" in up.stdout, up.stdout
    after = links_of(lab_api, host.namespace)
    assert after["br-in"]["ifindex"] != built["br-in"]["ifindex"]
    assert after["eth0"].get("master") == "br-in", after["eth0"]
    for tap in taps:
        assert after[tap]["ifindex"] == built[tap]["ifindex"]  # the same taps, joined again
        assert after[tap].get("master") == "br-in", after[tap]
    with operator_ssh(lab, HOST) as again:
        assert host.address in ssh_run(again, "ip -br addr show br-in")
    bridged_stack.preview_no_changes()

    old = tmp_path / "state-before-the-ifindex.json"
    old.write_text(json.dumps(as_before_the_ifindex(bridged_stack.export())))
    bridged_stack.pulumi("stack", "import", "--file", str(old))
    assert all("@" not in r["id"] for r in bridged_stack.resources("UplinkBridge"))
    bridged_stack.preview_no_changes()
    bridged_stack.refresh()
    bridged_stack.preview_no_changes()

    bridged_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []
