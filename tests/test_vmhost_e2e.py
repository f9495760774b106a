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
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.lab.sshclient import open_client, run_command
from kvmnet_lab.lab.vmhost import VmHost, start_vm_host, stop_vm_host, wait_for_ssh
from kvmnet_lab.testing.debian_image import vmhost_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots
from kvmnet_lab.testing.stack import TestStack

pytestmark = [pytest.mark.e2e, pytest.mark.vmhost]

UNIT = "kvmnet-restore.service"
BRIDGE, SUBNET, GATEWAY = "kabr", "10.0.71.0/24", "10.0.71.254"


@pytest.fixture(scope="session")
def vm_host(_lab_session: tuple[Lab, LabStatus]) -> Iterator[VmHost]:
    """The VM host, booted once for the session and stopped by its PID afterwards."""
    lab_api, _ = _lab_session
    image = vmhost_image_dir()
    started = time.monotonic()
    try:
        host = start_vm_host(lab_api, image)
        print(f"\nVM host ({host.accelerator}) booted in {time.monotonic() - started:.1f}s")
        yield host
    finally:
        stop_vm_host(lab_api)


def sh(host: VmHost, command: str, timeout: float = 60.0) -> str:
    client = open_client(host.address, host.port, host.user, host.private_key, host.known_hosts)
    try:
        status, out = run_command(client, command, timeout=timeout)
    finally:
        client.close()
    assert status == 0, f"{command}: exit {status}: {out}"
    return out


def host_view(host: VmHost) -> dict[str, Any]:
    """What kvmnet may change on the host and a restore must bring back: links (no indexes),
    addresses, routes, firewall rules (no counters), forwarding and dnsmasq."""
    links = sh(host, "ip -o link show | sed -E 's/^[0-9]+: //; s/ qlen [0-9]+//'")
    ruleset = sh(host, "nft list ruleset; iptables-legacy-save; ip6tables-legacy-save")
    rules = [
        re.sub(r"counter packets \d+ bytes \d+|\[\d+:\d+\]", "", line).rstrip()
        for line in ruleset.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {
        "links": sorted(line.split(" link/")[0] for line in links.splitlines()),
        "addresses": sorted(sh(host, "ip -o addr show | awk '{print $2, $3, $4}'").splitlines()),
        "routes": sorted(sh(host, "ip -4 route show").splitlines()),
        "rules": rules,
        "sysctls": sh(host, "sysctl net.ipv4.ip_forward net.ipv6.conf.all.forwarding").split("\n"),
        "dnsmasq": sorted(  # command lines without the PID
            re.sub(r"^\d+ ", "", p) for p in sh(host, "pgrep -a dnsmasq || true").splitlines()
        ),
    }


def boot_id(host: VmHost) -> str:
    return sh(host, "cat /proc/sys/kernel/random/boot_id").strip()


def reboot(host: VmHost) -> float:
    """`systemctl reboot` over SSH; seconds until sshd answers again in the new boot."""
    old = boot_id(host)
    started = time.monotonic()
    client = open_client(host.address, host.port, host.user, host.private_key, host.known_hosts)
    try:
        run_command(client, "systemctl reboot", timeout=10)
    except (OSError, paramiko.SSHException):
        pass  # the connection may die with the host
    finally:
        client.close()
    while time.monotonic() - started < 600:
        wait_for_ssh(host, timeout=600)
        try:
            if boot_id(host) != old:
                return time.monotonic() - started
        except (OSError, paramiko.SSHException, AssertionError):
            pass
        time.sleep(1.0)
    raise AssertionError("the VM host did not come back from the reboot")


def wait_for_restore(host: VmHost, timeout: float = 300.0) -> float:
    """Wait until the boot's kvmnet-restore.service is done (sshd may answer before it, as
    the unit runs after network-online.target); returns how long the restore ran."""
    deadline = time.monotonic() + timeout
    props = "-p ActiveState -p ExecMainStartTimestampMonotonic -p ExecMainExitTimestampMonotonic"
    while time.monotonic() < deadline:
        try:
            text = sh(host, f"systemctl show {props} {UNIT}")
        except (OSError, paramiko.SSHException):
            time.sleep(2.0)  # sshd restarting while the host boots
            continue
        shown = dict(line.split("=", 1) for line in text.splitlines())
        if shown["ActiveState"] != "activating" and int(shown["ExecMainExitTimestampMonotonic"]):
            spent = int(shown["ExecMainExitTimestampMonotonic"])
            return (spent - int(shown["ExecMainStartTimestampMonotonic"])) / 1e6
        time.sleep(2.0)
    raise AssertionError(f"{UNIT} did not finish within {timeout:.0f}s")


PROGRAM = """
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.models import NetworkArgs, network_for_model

conn = HostSettings(**{conn!r})
network_for_model({model!r})("net", NetworkArgs(connection=conn, **{args!r}))
"""


def network_stack(
    tmp_path: Path, host: VmHost, project: str, model: str = "nat", **args: Any
) -> TestStack:
    conn = host_settings(host.host_status(), "/usr/bin/python3").to_props()
    args = {"uplink": "eth0", **args}
    program = textwrap.dedent(PROGRAM).format(conn=conn, model=model, args=args)
    return TestStack(tmp_path, program, project=project)


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
