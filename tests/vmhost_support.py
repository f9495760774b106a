"""What the tests on the lab's VM host share: commands over SSH, what a restore must bring
back, a real reboot, the restore unit's run, and a stack of one network on the VM."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path
from typing import Any

import paramiko
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab.sshclient import open_client, run_command
from kvmnet_lab.lab.vmhost import VmHost, wait_for_ssh
from kvmnet_lab.testing.stack import TestStack

UNIT = "kvmnet-restore.service"


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


