"""Firewall managers on a real host: the lab's VM host has firewalld and ufw installed and off.
Each test turns one on as an operator would (firewalld in its default zone; ufw enabled with
deny incoming and deny routed), makes a routed and a NAT network through the real engine, and
kvmnet's verify probe (a namespace on each bridge standing in for a guest, and a neighbour
that routes the subnet via the host) proves each network's row: DHCP, the gateway, the
outside, the way in. Then the manager's own reload: `pulumi refresh` shows what it broke,
`pulumi up` repairs it, the probe proves the rows again, and a second refresh finds nothing.
Destroy, and the manager off again, leave the host as the test found it."""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab.vmhost import VmHost
from kvmnet_lab.testing.snapshot import diff_snapshots
from kvmnet_lab.testing.stack import TestStack
from vmhost_support import host_view, sh

pytestmark = [pytest.mark.e2e, pytest.mark.vmhost]

# Two networks in one stack: one `up` and one probe run cover both models.
PROGRAM = """
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.models import NetworkArgs, network_for_model

conn = HostSettings(**{conn!r})
for name, model, bridge, third in {networks!r}:
    network_for_model(model)(name, NetworkArgs(
        connection=conn, bridge=bridge, subnet=f"10.0.{{third}}.0/24",
        gateway=f"10.0.{{third}}.254", uplink="eth0",
    ))
"""
NETWORKS = (("nat", "nat", "kfnat", 81), ("routed", "routed", "kfrt", 82))


def two_networks(tmp_path: Path, host: VmHost, project: str) -> TestStack:
    conn = host_settings(host.host_status(), "/usr/bin/python3").to_props()
    program = textwrap.dedent(PROGRAM).format(conn=conn, networks=NETWORKS)
    return TestStack(tmp_path, program, project=project)


def checks(stack: TestStack) -> list[dict[str, Any]]:
    found = stack.resources(":NetworkCheck")
    assert len(found) == len(NETWORKS), [r["urn"] for r in found]
    return found


def assert_rows_proven(stack: TestStack) -> None:
    """Every network's probe passed; NAT reached the outside, routed let the neighbour in."""
    for check in checks(stack):
        out = check["outputs"]
        assert not out.get("failing"), (check["urn"], out.get("failing"))
        print(f"{check['urn'].rsplit('::', 1)[-1]}: passed {out.get('passed')}")


def reprove(stack: TestStack) -> None:
    """Run every network's probe again with nothing changed (operations.md: `up --replace`)."""
    targets = [arg for c in checks(stack) for arg in ("--target-replace", c["urn"])]
    stack.pulumi("up", "--yes", "--skip-preview", *targets)


def changed(refresh_output: str) -> list[str]:
    """The kinds of resource a refresh found changed (`~ TYPE: (update)` lines of its diff)."""
    found = re.findall(r"~ \S+/kvmnet:(\w+): \(update\)", refresh_output)
    return sorted(set(found))


def reload_then_repair(stack: TestStack, reload_command: str, host: VmHost) -> list[str]:
    """The manager's reload; refresh shows what it broke, up puts it back, the probe proves
    the rows again and a second refresh has nothing to show. Returns the first refresh's
    changes (empty when the reload broke nothing)."""
    sh(host, reload_command, timeout=120)
    drift = changed(stack.pulumi("refresh", "--yes", "--diff").stdout)
    print(f"after `{reload_command}`, refresh showed: {drift or 'no change'}")
    stack.up()  # puts back what the refresh found missing (nothing to do when it found none)
    reprove(stack)
    assert_rows_proven(stack)
    refreshed = stack.pulumi("refresh", "--yes", "--expect-no-changes", "--diff")
    assert " updated" not in refreshed.stdout, refreshed.stdout
    return drift


def nft_tables(host: VmHost) -> set[str]:
    return set(sh(host, "nft list tables").splitlines())


@contextmanager
def firewalld_on(host: VmHost) -> Iterator[None]:
    """firewalld running in its default zone (public), stopped again after (on stop it
    removes its own table)."""
    assert sh(host, "systemctl is-enabled firewalld || true").strip() == "disabled"
    tables = nft_tables(host)
    try:
        sh(host, "systemctl start firewalld && firewall-cmd --state", timeout=180)
        print(f"firewalld: default zone {sh(host, 'firewall-cmd --get-default-zone').strip()}")
        yield
    finally:
        sh(host, "systemctl stop firewalld", timeout=120)
        for table in nft_tables(host) - tables:
            sh(host, f"nft delete {table}")


# `ufw disable` keeps its chains until the next boot: the built-in chains' jumps to them go
# first, then the chains.
UFW_CHAINS_GONE = textwrap.dedent("""\
    for t in iptables ip6tables; do
      $t -S | awk '$1 == "-A" && $0 ~ / -j ufw6?-/' | sed 's/^-A/-D/' \\
        | while read -r rule; do eval "$t $rule"; done
      for c in $($t -S | awk '$1 == "-N" && $2 ~ /^ufw6?-/ {print $2}'); do $t -F "$c"; done
      for c in $($t -S | awk '$1 == "-N" && $2 ~ /^ufw6?-/ {print $2}'); do $t -X "$c"; done
    done""")
UFW_SAVE = (
    "rm -rf /root/ufw-found && mkdir /root/ufw-found && cp -a /etc/ufw"
    " /root/ufw-found/etc-ufw && cp -a /etc/default/ufw /root/ufw-found/default-ufw"
)
UFW_PUT_BACK = (
    "rm -rf /etc/ufw && cp -a /root/ufw-found/etc-ufw /etc/ufw && cp -a"
    " /root/ufw-found/default-ufw /etc/default/ufw && rm -rf /root/ufw-found"
)


@contextmanager
def ufw_on(host: VmHost) -> Iterator[None]:
    """ufw enabled with deny incoming and deny routed (SSH allowed, or the test's next login
    would be refused), then disabled with its settings, chains and tables as found."""
    assert "Status: inactive" in sh(host, "ufw status")
    tables = nft_tables(host)
    sh(host, UFW_SAVE)
    try:
        sh(host, "ufw default deny incoming && ufw default deny routed && ufw allow 22/tcp"
                 " && ufw --force enable", timeout=180)  # fmt: skip
        print(sh(host, "ufw status verbose"))
        # "disabled (routed)" there means ufw's own sysctl.conf forwards nothing; the policy
        # it sets on FORWARD is deny routed's all the same
        policies = sh(host, "iptables -S INPUT | head -n1; iptables -S FORWARD | head -n1").split(
            "\n"
        )
        assert policies[:2] == ["-P INPUT DROP", "-P FORWARD DROP"], policies
        yield
    finally:
        sh(host, "ufw disable", timeout=120)
        sh(host, UFW_CHAINS_GONE)
        sh(host, UFW_PUT_BACK)
        for table in nft_tables(host) - tables:
            sh(host, f"nft delete {table}")


def run_two_networks(tmp_path: Path, host: VmHost, project: str, reload_command: str) -> list[str]:
    """The networks proven, the manager's reload repaired; what its refresh showed changed."""
    started = time.monotonic()
    stack = two_networks(tmp_path, host, project)
    try:
        stack.up()
        assert_rows_proven(stack)
        drift = reload_then_repair(stack, reload_command, host)
        stack.destroy()
        print(f"\n{project}: {time.monotonic() - started:.1f}s from before `up`")
        return drift
    finally:
        stack.remove()


def test_firewalld_in_its_default_zone_and_its_reload(tmp_path: Path, vm_host: VmHost) -> None:
    before = host_view(vm_host)
    with firewalld_on(vm_host):
        drift = run_two_networks(tmp_path, vm_host, "kvfwd", "firewall-cmd --reload")
    # firewalld's reload makes its table anew, without kvmnet's pass chains in it
    assert drift == ["DhcpServer", "ForwardRules"], drift
    assert diff_snapshots(before, host_view(vm_host)) == []


def test_ufw_deny_incoming_and_routed_and_its_reload(tmp_path: Path, vm_host: VmHost) -> None:
    before = host_view(vm_host)
    with ufw_on(vm_host):
        drift = run_two_networks(tmp_path, vm_host, "kvufw", "ufw reload")
    assert drift == [], drift  # ufw reloads its own chains only: kvmnet's jumps stay
    assert diff_snapshots(before, host_view(vm_host)) == []
