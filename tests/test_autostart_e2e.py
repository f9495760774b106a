"""Autostart in the namespace lab: each model up through the real engine, the lab host
"rebooted" (its namespace made anew, /run emptied, /var/lib/kvmnet kept), then the restore run
inside the new namespace as root from /var/lib/kvmnet, as kvmnet-restore.service would. The
host is back as `up` left it, a second restore changes nothing, Pulumi agrees (refresh, then
preview with no changes), and destroy leaves no record behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.lab.faults import reboot_host
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack

from kvmnet_provider.agent.boot import records

pytestmark = pytest.mark.e2e


def boot_dir(namespace: str) -> Path:
    return records.ROOT / f"netns-{os.stat(f'/run/netns/{namespace}').st_ino}"


def run_restore(lab_api: Lab, namespace: str) -> subprocess.CompletedProcess[str]:
    """The restore as the unit runs it: the kept code copy, isolated, as root, in the host."""
    launcher = boot_dir(namespace) / "agent-code" / "kvmnet-restore.py"
    assert launcher.is_file(), f"no code copy at {launcher}"
    return lab_api.exec_in(
        namespace, [sys.executable, "-I", str(launcher)], capture_output=True, text=True,
        timeout=300,
    )


def qemu_pids(namespace: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    found = []
    for pid in (int(t) for t in out.stdout.split() if t.isdigit()):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if b"qemu" in argv0:
            found.append(pid)
    return sorted(found)


def restored_view(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What a restore must bring back as `up` made it: links (without the kernel-chosen tap
    indexes), addresses, routes, rules, sysctls, and kvmnet's processes (dnsmasq)."""

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k not in ("pid", "ifindex")}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, str):
            return re.sub(r"netns-\d+", "netns-N", value)
        return value

    kept = ("links", "addresses", "routes4", "iptables", "ip6tables", "sysctls")
    view = {k: scrub(snapshot[k]) for k in kept}
    view["processes"] = sorted(
        scrub(p) for p in snapshot["processes"] if "dnsmasq" in json.dumps(p)
    )
    return view


# The network and a guest's tap, without booting the guest (the tap joins the model's bridge,
# and its id names the bridge's ifindex).
PROGRAM = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.models import NetworkArgs, network_for_model
from kvmnet_provider.resources import TapPort, TapPortArgs

conn = HostSettings(**{conn!r})
net = network_for_model({model!r})("net", NetworkArgs(connection=conn, **{args!r}))
TapPort("tap", TapPortArgs(connection=conn, name="kat1", bridge=net.bridge, autostart={tap!r}))
"""


def model_stack(tmp_path: Path, lab: LabStatus, model: str, **extra: Any) -> TestStack:
    conn = host_settings(lab.hosts[0], sys.executable).to_props()
    args: dict[str, Any] = {"bridge": "kabr", "subnet": "10.0.71.0/24", **extra}
    if model in ("routed", "nat"):
        args["gateway"] = "10.0.71.254"
    if model == "bridged":
        args.update(subnet=lab.lan, gateway=lab.gateway, uplink="eth0")
    tap = None if args.get("autostart", True) else False
    program = textwrap.dedent(PROGRAM).format(conn=conn, model=model, args=args, tap=tap)
    return TestStack(tmp_path, program, project="kauto")


@pytest.mark.parametrize("model", ["isolated", "routed", "nat", "bridged"])
def test_a_rebooted_host_comes_back_by_itself(
    model: str, tmp_path: Path, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    stack = model_stack(tmp_path, lab, model)
    try:
        stack.up()
        made = restored_view(host_snapshot(lab_api, ns))
        assert any((boot_dir(ns) / "records").glob("*.json"))
        reboot_host(lab_api, lab.hosts[0].name, run_dir_survives=False)
        assert restored_view(host_snapshot(lab_api, ns)) != made

        first = run_restore(lab_api, ns)
        assert first.returncode == 0, first.stderr
        assert "0 failed, 0 skipped" in first.stderr, first.stderr
        assert diff_snapshots(made, restored_view(host_snapshot(lab_api, ns))) == []
        second = run_restore(lab_api, ns)  # idempotent: nothing changes
        assert second.returncode == 0, second.stderr
        assert diff_snapshots(made, restored_view(host_snapshot(lab_api, ns))) == []

        # Pulumi agrees: the refresh itself finds nothing changed, not just the next preview.
        refreshed = stack.pulumi("refresh", "--yes", "--expect-no-changes", "--diff")
        assert " updated" not in refreshed.stdout, refreshed.stdout
        stack.preview_no_changes()
        stack.destroy()
        assert not boot_dir(ns).exists()
        after = host_snapshot(lab_api, ns)
        assert diff_snapshots(restored_view(before), restored_view(after)) == []
    finally:
        stack.destroy(check=False)
        stack.remove()


def test_autostart_false_stays_down(tmp_path: Path, lab: LabStatus, lab_api: Lab) -> None:
    ns = lab.hosts[0].namespace
    stack = model_stack(tmp_path, lab, "routed", autostart=False)
    try:
        stack.up()
        assert not boot_dir(ns).exists()  # nothing recorded
        reboot_host(lab_api, lab.hosts[0].name, run_dir_survives=False)
        stack.refresh()
        left = [r["type"] for r in stack.resources() if not r["type"].startswith("pulumi:")]
        # components, and the check's last result: no host object
        assert all(t.endswith(("Network", ":NetworkCheck")) for t in left), left
    finally:
        stack.destroy(check=False)
        stack.remove()


def test_guests_come_back_and_keep_their_row(tmp_path: Path, lab: LabStatus, lab_api: Lab) -> None:
    """The NAT model with its two guests (DHCP leases, masquerade): after the reboot and the
    restore, each guest runs again and the model's whole row holds from inside them."""
    from kvmnet_lab.hostconfig import lab_stack_config
    from kvmnet_lab.probe import EXPECTED, GuestEndpoint, Outside, observe
    from kvmnet_lab.testing.guest import guest_image_dir
    from kvmnet_lab.testing.stack import config_stack

    ns = lab.hosts[0].namespace
    config = lab_stack_config(lab, model="nat", image_dir=guest_image_dir())
    config.update({"kvmnet:accelerator": "tcg", "kvmnet:dhcp": True})
    outside = Outside(lab.ext.namespace, lab.ext.address, lab.ext.echo_port)

    def row(stack: TestStack) -> dict[str, object]:
        guests = [r["outputs"] for r in stack.resources("QemuGuest")]
        addresses = {"g1": "10.0.1.11", "g2": "10.0.1.12"}
        ends = [GuestEndpoint(g["name"], addresses[g["name"]], g["console_socket"])
                for g in sorted(guests, key=lambda g: g["name"])]
        return observe(ends, "10.0.1.254", lab.hosts[0].address, outside).as_dict()

    with config_stack(tmp_path, "autog", config) as stack:
        try:
            stack.up()
            reboot_host(lab_api, lab.hosts[0].name, run_dir_survives=False)
            first = run_restore(lab_api, ns)
            assert first.returncode == 0, first.stderr
            qemus = qemu_pids(ns)
            assert len(qemus) == 2, first.stderr
            second = run_restore(lab_api, ns)
            assert second.returncode == 0, second.stderr
            assert qemu_pids(ns) == qemus  # the same guests, not started again
            refreshed = stack.pulumi("refresh", "--yes", "--expect-no-changes", "--diff")
            assert " updated" not in refreshed.stdout, refreshed.stdout
            stack.preview_no_changes()
            assert row(stack) == EXPECTED["nat"]
            stack.destroy()
            assert not boot_dir(ns).exists()
        finally:
            stack.destroy(check=False)
