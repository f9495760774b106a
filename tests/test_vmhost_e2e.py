"""Autostart on a real host: the lab's VM host (its own kernel and systemd, booted once per
session) gets a NAT network through the real engine, then really reboots (`systemctl reboot`).
With no Pulumi command in between, kvmnet-restore.service brings the network back as `up`
left it (bridge and address, firewall rules, ip_forward, dnsmasq); Pulumi agrees (refresh
with no changes); destroy leaves the host as it was, unit and records included. Then, on the
same VM, the bridged model takes over eth0, the NIC the test's own SSH runs over: it comes
back bridged after a reboot, and a reboot with a broken record leaves the host reachable on
its own configuration."""

from __future__ import annotations

import difflib
import time
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.lab.sshclient import open_client, run_command
from kvmnet_lab.lab.vmhost import VmHost
from kvmnet_lab.testing.snapshot import diff_snapshots
from vmhost_support import UNIT, host_view, network_stack, reboot, sh, wait_for_restore

pytestmark = [pytest.mark.e2e, pytest.mark.vmhost]

BRIDGE, SUBNET, GATEWAY = "kabr", "10.0.71.0/24", "10.0.71.254"


def test_a_really_rebooted_host_comes_back_by_itself(tmp_path: Path, vm_host: VmHost) -> None:
    """One reboot for two stacks: a NAT network that comes back, and one with `autostart:
    false` (no DHCP) that stays down."""
    started = time.monotonic()
    before = host_view(vm_host)
    stack = network_stack(tmp_path, vm_host, "kvm", bridge=BRIDGE, subnet=SUBNET, gateway=GATEWAY)
    off = network_stack(
        tmp_path, vm_host, "kvmoff", bridge="kaoff", subnet="10.0.72.0/24",
        gateway="10.0.72.254", dhcp=False, autostart=False,
    )  # fmt: skip
    try:
        stack.up()
        made = host_view(vm_host)
        assert f"{GATEWAY}/24" in " ".join(made["addresses"]), made["addresses"]
        assert "net.ipv4.ip_forward = 1" in made["sysctls"], made["sysctls"]
        assert any(BRIDGE in p for p in made["dnsmasq"]), made["dnsmasq"]
        assert made["rules"] != before["rules"]
        assert sh(vm_host, f"systemctl is-enabled {UNIT}").strip() == "enabled"
        off.up()
        assert "kaoff" in " ".join(host_view(vm_host)["links"])

        took = reboot(vm_host)
        restored = wait_for_restore(vm_host)
        print(f"\nVM host rebooted in {took:.1f}s; the restore ran {restored:.1f}s")
        journal = sh(vm_host, f"journalctl -b -u {UNIT} --no-pager -o cat")
        assert "0 failed, 0 skipped" in journal, journal
        state = sh(vm_host, f"systemctl show -p Result -p ExecMainStatus {UNIT}")
        assert "Result=success" in state and "ExecMainStatus=0" in state, state
        back = host_view(vm_host)
        order = list(difflib.unified_diff(made["rules"], back["rules"], lineterm="", n=1))
        print("firewall rules in the same order" if not order else "\n".join(order))
        # The same rules; their order within a chain may follow the restore's order.
        assert sorted(back.pop("rules")) == sorted(made.pop("rules"))
        assert diff_snapshots(made, back) == []  # and nothing of `off`
        off.refresh()
        left = [r["type"] for r in off.resources() if not r["type"].startswith("pulumi:")]
        # components, and the check's last result: no host object
        assert all(t.endswith(("Network", ":NetworkCheck")) for t in left), left

        refreshed = stack.pulumi("refresh", "--yes", "--expect-no-changes", "--diff")
        assert " updated" not in refreshed.stdout, refreshed.stdout
        stack.preview_no_changes()
        off.destroy()
        stack.destroy()
        assert_as_before(vm_host, before)
        print(f"\nVM host test: {time.monotonic() - started:.1f}s from before `up`")
    finally:
        off.remove()
        stack.remove()


UPLINK_BRIDGE, MISSING_NIC = "kabu", "eth9"
# Names a NIC the host does not have in the uplink's record: what a NIC renamed by a new
# kernel or udev rule leaves behind.
BREAK_UPLINK_RECORD = f"""python3 - <<'EOF'
import glob, json
for path in glob.glob("/var/lib/kvmnet/netns-*/records/uplink-*.json"):
    doc = json.load(open(path))
    doc["args"]["nic"] = "{MISSING_NIC}"
    open(path, "w").write(json.dumps(doc))
    print(path)
EOF"""


def own_address(view: dict[str, Any]) -> str:
    """eth0's address as the distribution configured it (cloud-init's ifupdown config)."""
    found = [a.split()[2] for a in view["addresses"] if a.startswith("eth0 inet ")]
    assert len(found) == 1, view["addresses"]
    return found[0]


def assert_bridged(host: VmHost, address: str) -> None:
    """Over a new SSH login: eth0 is the bridge's port and the bridge holds its address."""
    assert f"master {UPLINK_BRIDGE} " in sh(host, "ip -o link show dev eth0")
    assert address in sh(host, f"ip -o addr show dev {UPLINK_BRIDGE}")
    assert address not in sh(host, "ip -o addr show dev eth0")
    assert "default via" in sh(host, f"ip -4 route show dev {UPLINK_BRIDGE}")


def assert_as_before(host: VmHost, before: dict[str, Any]) -> None:
    assert "No such file" in sh(host, f"ls /etc/systemd/system/{UNIT} 2>&1 || true")
    assert sh(host, "ls /var/lib/kvmnet/ 2>/dev/null | grep netns- || true").strip() == ""
    assert diff_snapshots(before, host_view(host)) == []


def test_bridged_on_the_only_nic_comes_back_and_a_broken_record_strands_nothing(
    tmp_path: Path, vm_host: VmHost
) -> None:
    """The bridged model takes over eth0, the NIC this test's SSH runs over. A reboot brings
    the bridge back holding eth0's address by itself; a reboot with the uplink's record
    naming a NIC that does not exist leaves the host on its own configuration, reachable."""
    started = time.monotonic()
    before = host_view(vm_host)
    own = own_address(before)
    # A long rollback: under TCG on a busy machine the confirming login takes seconds.
    stack = network_stack(
        tmp_path, vm_host, "kvbr", model="bridged", bridge=UPLINK_BRIDGE, rollback_seconds=60
    )
    try:
        operator = open_client(vm_host.address, vm_host.port, vm_host.user,
                               vm_host.private_key, vm_host.known_hosts)  # fmt: skip
        try:  # a session over the very NIC that is about to be bridged
            stack.up()
            status, out = run_command(operator, f"ip -o addr show dev {UPLINK_BRIDGE}")
            assert status == 0 and own in out, out  # it survived the take-over
        finally:
            operator.close()
        assert_bridged(vm_host, own)

        took = reboot(vm_host)
        restored = wait_for_restore(vm_host)
        print(f"\nbridged: rebooted in {took:.1f}s; the restore ran {restored:.1f}s")
        journal = sh(vm_host, f"journalctl -b -u {UNIT} --no-pager -o cat")
        assert "0 failed, 0 skipped" in journal, journal
        assert_bridged(vm_host, own)  # a new login, over the bridge the boot made
        refreshed = stack.pulumi("refresh", "--yes", "--expect-no-changes", "--diff")
        assert " updated" not in refreshed.stdout, refreshed.stdout

        assert "/records/uplink-" in sh(vm_host, BREAK_UPLINK_RECORD)
        took = reboot(vm_host)  # returns once a new login gets in: the host is reachable
        restored = wait_for_restore(vm_host)
        print(f"\nbroken record: rebooted in {took:.1f}s; the restore ran {restored:.1f}s")
        journal = sh(vm_host, f"journalctl -b -u {UNIT} --no-pager -o cat")
        why = [line for line in journal.splitlines() if MISSING_NIC in line]
        assert len(why) == 1 and "does not exist" in why[0], journal
        print(f"the restore said: {why[0]}")
        assert "Result=exit-code" in sh(vm_host, f"systemctl show -p Result {UNIT}")  # failed
        back = host_view(vm_host)
        for part in ("links", "addresses", "routes"):  # eth0 as the distribution made it
            assert back[part] == before[part], (part, back[part], before[part])

        stack.destroy()
        assert_as_before(vm_host, before)
        print(f"\nbridged VM host test: {time.monotonic() - started:.1f}s from before `up`")
    finally:
        stack.remove()
