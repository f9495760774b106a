"""The operator's view of a lab host during a takeover or an adopt: SSH sessions of their own
(host key checked), a link's addresses and the host's routes as the kernel lists them, and the
wait until the host is exactly as before."""

from __future__ import annotations

import json
import time
from typing import Any

import paramiko

from ..lab import Lab, LabStatus
from ..lab.layouts import wait_dad
from ..lab.sshclient import open_client
from .snapshot import diff_snapshots, host_snapshot, run_in
from .stack import TestStack

SETTLE_SECONDS = 10.0  # a rollback process that was just heard may take a moment to leave


def operator_ssh(lab: LabStatus, name: str) -> paramiko.SSHClient:
    """A new SSH session to lab host `name`, as the operator would open one."""
    host = lab.host(name)
    return open_client(host.address, host.port, host.user, host.private_key, host.known_hosts)


def ssh_run(client: paramiko.SSHClient, command: str) -> str:
    _, out, _ = client.exec_command(command, timeout=10)
    return str(out.read().decode())


def link_state(lab_api: Lab, name: str, device: str) -> dict[str, Any]:
    """`ip -j` of `device`'s addresses and of every route, as the kernel lists them (order
    included: the first address of a subnet is its primary), past IPv6 duplicate address
    detection."""
    ns = lab_api.namespace(name)
    wait_dad(lab_api, ns)

    def ip_json(*args: str) -> Any:
        return json.loads(run_in(lab_api, ns, ["ip", "-j", *args]) or "[]")

    return {
        "addr": ip_json("addr", "show", "dev", device),
        "route": ip_json("-4", "route", "show", "table", "all"),
        "route6": ip_json("-6", "route", "show", "table", "all"),
    }


def settle(
    lab_api: Lab, name: str, device: str, before: dict[str, Any], snapshot: dict[str, Any]
) -> None:
    """Asserts host `name` is exactly as before: `device`'s link state and the snapshot."""
    deadline, ns = time.monotonic() + SETTLE_SECONDS, lab_api.namespace(name)
    while True:
        now_state, now_snapshot = link_state(lab_api, name, device), host_snapshot(lab_api, ns)
        done = now_state == before and not diff_snapshots(snapshot, now_snapshot)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert now_state == before
    assert diff_snapshots(snapshot, now_snapshot) == []


def failed_up(stack: TestStack) -> tuple[str, float]:
    """`up`, which must fail as an expected failure (no traceback): its output and seconds."""
    started = time.monotonic()
    failed = stack.up(check=False)
    took = time.monotonic() - started
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0, text
    assert "Traceback" not in text, text
    return text, took
