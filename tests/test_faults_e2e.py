"""Faults converge (real engine, lab host, test guests).

Every case puts the stack program's NAT model (two guests) on a lab host, meets one fault
(`pulumi` killed mid-`up`, the host agent killed, SSH cut, 15 s of packet loss in the lab's
switch during `refresh`, a host "reboot"), and ends the same way (`converges`): `refresh` +
`up` succeed, nothing is left to change, the host is what a clean `up` of the same program
made (`clean`, taken once per module), the guests run once each, the model's reachability
row holds from inside them, and `destroy` leaves the host as it was before the case.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import host_settings, lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.lab.faults import frames_dropped, reboot_host
from kvmnet_lab.probe import EXPECTED, GuestEndpoint, Outside, observe
from kvmnet_lab.testing import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import STACK_PROGRAM, TestStack

pytestmark = pytest.mark.e2e

PROJECT, STACK = "kfault", "dev"  # one owner identity for the clean run and every case
GUESTS = ("g1", "g2")
BRIDGE_IP = "10.0.1.254"


# --- the host, as far as a comparison of two runs goes ---------------------------------------
def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A host snapshot without what differs between two runs of the same program on the same
    host: interface indexes, kernel-chosen MACs (and the link-local addresses made from them),
    PIDs and start times in kvmnet's records, and the network namespace's inode in run-dir
    paths and in the names of the guests' users (a rebuilt namespace has another)."""

    def scrub(value: Any, key: str = "") -> Any:
        # the hashes: of the argv's and dnsmasq.conf's paths, which hold the namespace's inode;
        # a guest's record of its taps' interface indexes
        if key in ("ifindex", "pid", "started", "argv_sha256", "conf_sha256", "tap_indexes"):
            return None
        if isinstance(value, dict):
            return {k: scrub(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, str):
            value = re.sub(r"netns-\d+", "netns-N", value)
            # a guest's own user is named from its owner and namespace: a new namespace, a new name
            value = re.sub(r"\bkvmnet-[0-9a-f]{8}\b", "kvmnet-U", value)
            return re.sub(r"(kvmnet guest \S+ netns-N) [0-9a-f]{24}\b", r"\1 D", value)
        return value

    links = {
        name: {k: v for k, v in link.items() if k not in ("ifindex", "address")}
        for name, link in snapshot["links"].items()
    }
    addresses = {  # an IPv6 link-local address is made from the (kernel-chosen) MAC
        name: [{**a, "local": None} if a.get("scope") == "link" else a for a in entries]
        for name, entries in snapshot["addresses"].items()
    }
    scrubbed = scrub({**snapshot, "links": links, "addresses": addresses})
    # Sorted by name, which scrub just blanked; a dead namespace's users that carry a reused
    # inode scrub to the same lines as this stack's, so each line counts once.
    scrubbed["users"] = sorted(set(scrubbed["users"]))
    return scrubbed


def qemus_in(namespace: str) -> list[int]:
    """PIDs of QEMU processes in the lab host's namespace (this session's lab: ours)."""
    return sorted(pid for pid, argv in _processes(namespace) if b"qemu" in argv[0])


def agents_in(namespace: str) -> list[int]:
    """PIDs of kvmnet host agents in the lab host's namespace."""
    return [
        pid
        for pid, argv in _processes(namespace)
        if any(b"kvmnet-agent-" in a for a in argv) and not any(b"rollback_main" in a for a in argv)
    ]


def sshd_processes(namespace: str) -> list[int]:
    """The lab host's sshd: its listener (which the lab started) and every session of it."""
    return [
        pid
        for pid, argv in _processes(namespace)
        if argv[0].startswith(b"sshd") or argv[0].endswith(b"/sshd")
    ]


def _processes(namespace: str) -> list[tuple[int, list[bytes]]]:
    out = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for pid in out.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0]:
            found.append((int(pid), argv))
    return found


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- the stack, its clean run, and how every case ends -----------------------------------------
@pytest.fixture(scope="module")
def config(lab: LabStatus) -> dict[str, Any]:
    values = lab_stack_config(lab, model="nat", image_dir=guest_image_dir())
    values["kvmnet:accelerator"] = "tcg"
    values["kvmnet:firewallBackend"] = "iptables"  # what the snapshot reads (iptables-legacy)
    return values


def new_stack(root: Path, config: dict[str, Any]) -> TestStack:
    stack = TestStack(root, STACK_PROGRAM, project=PROJECT, stack=STACK)
    stack.config_values(config)
    return stack


@pytest.fixture(scope="module")
def clean(
    tmp_path_factory: pytest.TempPathFactory, config: dict[str, Any], lab: LabStatus, lab_api: Lab
) -> dict[str, Any]:
    """The host as a clean `up` of the program leaves it (comparable), taken once."""
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    stack = new_stack(tmp_path_factory.mktemp("clean"), config)
    try:
        stack.up()
        made = comparable(host_snapshot(lab_api, ns))
        stack.destroy()
    finally:
        stack.remove()
        kill(qemus_in(ns))
    after = host_snapshot(lab_api, ns)
    assert after == before, "\n".join(diff_snapshots(before, after))
    return made


@pytest.fixture
def fault_stack(
    tmp_path: Path, config: dict[str, Any], clean: dict[str, Any], lab: LabStatus, lab_api: Lab
) -> Iterator[TestStack]:
    stack = new_stack(tmp_path, config)
    try:
        yield stack
    finally:
        stack.remove()
        ns = lab.hosts[0].namespace
        if leftovers(lab_api, ns):  # the case failed with a state that cannot destroy
            rescue = new_stack(tmp_path / "rescue", config)  # takes over what carries its marks
            try:
                rescue.up(check=False)
            finally:
                rescue.remove()
        kill(qemus_in(ns))  # nothing may survive a failed test


def leftovers(lab_api: Lab, namespace: str) -> bool:
    """Anything of this program's left on the host: a link, a rule or a guest."""
    snapshot = host_snapshot(lab_api, namespace)
    return f"{PROJECT}/{STACK}/" in json.dumps([snapshot["links"], snapshot["iptables"]]) or bool(
        qemus_in(namespace)
    )


def converges(
    stack: TestStack,
    lab: LabStatus,
    lab_api: Lab,
    clean: dict[str, Any],
    before: dict[str, Any],
    compare: Callable[[dict[str, Any]], dict[str, Any]] = lambda s: s,
) -> None:
    """`refresh` + `up` converge: no change left, the host as a clean `up` made it, each guest
    running once, the NAT row from inside the guests; then `destroy` restores `before`
    (compared through `compare`)."""
    ns = lab.hosts[0].namespace
    stack.refresh()
    stack.up()
    stack.preview_no_changes()
    now = comparable(host_snapshot(lab_api, ns))
    assert now == clean, "\n".join(diff_snapshots(clean, now))
    guests = stack.outputs()["guests"]
    assert sorted(guests) == list(GUESTS)
    assert qemus_in(ns) == sorted(g["pid"] for g in guests.values())  # each once, the known one
    endpoints = [GuestEndpoint(n, g["address"], g["console"]) for n, g in sorted(guests.items())]
    outside = Outside(lab.ext.namespace, lab.ext.address, lab.ext.echo_port)
    row = observe(endpoints, BRIDGE_IP, lab.hosts[0].address, outside).as_dict()
    assert row == EXPECTED["nat"], row
    stack.destroy()
    assert qemus_in(ns) == []
    after = host_snapshot(lab_api, ns)
    assert compare(after) == compare(before), "\n".join(diff_snapshots(before, after))


# --- starting `pulumi` and watching its state ----------------------------------------------------
def start(stack: TestStack, verb: str, **kwargs: Any) -> subprocess.Popen[str]:
    argv = ["pulumi", "--non-interactive", verb, "--yes", "--skip-preview", "--stack", STACK]
    return subprocess.Popen(
        argv,
        cwd=stack.dir,
        env=stack.ws.env(),
        text=True,
        **({"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} | kwargs),
    )


def checkpoint(stack: TestStack) -> dict[str, Any]:
    files = list((stack.ws.root / "backend").rglob(f"{PROJECT}/{STACK}.json"))
    if not files:
        return {}
    try:
        doc: dict[str, Any] = json.loads(files[0].read_text())
    except ValueError:
        return {}  # being written
    return doc.get("checkpoint", {}).get("latest") or {}


def pending_operations(stack: TestStack) -> list[dict[str, Any]]:
    return list(checkpoint(stack).get("pending_operations") or [])


def wait_for_guest_create(stack: TestStack, proc: subprocess.Popen[str]) -> None:
    """Until the engine has a guest's create under way (a pending operation in the state)."""
    deadline = time.monotonic() + 120
    while not any(
        "QemuGuest" in str(op.get("resource", {}).get("type", ""))
        for op in pending_operations(stack)
    ):
        assert proc.poll() is None, "up ended before a guest's create was under way"
        assert time.monotonic() < deadline, "no guest's create started"
        time.sleep(0.05)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[str, float]:
    """The command's output and how long it took from here; killed if it outlives `timeout`."""
    started = time.monotonic()
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    print(output)  # shown with -rP
    return output, time.monotonic() - started


def assert_one_line_failure(proc: subprocess.Popen[str], output: str, *fragments: str) -> None:
    assert proc.returncode != 0, output
    assert "Traceback" not in output and "Exception (client)" not in output, output
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in:\n{output}"


# --- the cases -------------------------------------------------------------------------------
def test_killed_mid_up_then_readme_recovery_converges(
    fault_stack: TestStack, lab: LabStatus, lab_api: Lab, clean: dict[str, Any]
) -> None:
    before = host_snapshot(lab_api, lab.hosts[0].namespace)
    # its own group: the engine, language host and provider die together
    up = start(fault_stack, "up", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
               start_new_session=True)  # fmt: skip
    try:
        wait_for_guest_create(fault_stack, up)
    finally:
        os.killpg(up.pid, signal.SIGKILL)  # the group this test started
        up.wait(30)
        fault_stack.ws.reap()  # its plugins, each in a group of its own
    assert pending_operations(fault_stack), "the kill left no pending operation"
    fault_stack.recover_after_kill()  # the README's steps
    assert not pending_operations(fault_stack)
    converges(fault_stack, lab, lab_api, clean, before)


def test_agent_killed_mid_create_fails_in_one_line_then_converges(
    fault_stack: TestStack, lab: LabStatus, lab_api: Lab, clean: dict[str, Any]
) -> None:
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    up = start(fault_stack, "up")
    wait_for_guest_create(fault_stack, up)
    agents = agents_in(ns)
    assert agents, "no host agent to kill"
    kill(agents)
    output, took = finish(up)
    assert_one_line_failure(up, output)
    assert any(
        "kvmnet:QemuGuest" in line or "the host agent" in line or "connection lost" in line
        for line in output.splitlines()
    ), output
    assert took < 200, took  # bounded: not the 120 s of an unanswered request, twice
    converges(fault_stack, lab, lab_api, clean, before)
    assert list(Path("/tmp").glob("kvmnet-agent-*")) == []  # its code was never put there


def cut_ssh(namespace: str) -> None:
    kill(sshd_processes(namespace))


@pytest.mark.parametrize("when", ["before-up", "guest-create"])
def test_ssh_cut_fails_in_one_line_then_converges(
    when: str, fault_stack: TestStack, lab: LabStatus, lab_api: Lab, clean: dict[str, Any]
) -> None:
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    try:
        if when == "before-up":
            cut_ssh(ns)
        up = start(fault_stack, "up")
        if when == "guest-create":
            wait_for_guest_create(fault_stack, up)
            cut_ssh(ns)
        output, took = finish(up)
        assert_one_line_failure(up, output, f"root@{lab.hosts[0].address}:22: ")
        assert took < 200, took
    finally:
        lab_api.up(hosts=len(lab.hosts))  # sshd back (idempotent for everything else)
    converges(fault_stack, lab, lab_api, clean, before)


def recorded(stack: TestStack) -> dict[str, dict[str, Any]]:
    """The state's resources of kvmnet, by URN: their outputs."""
    return {
        r["urn"]: r.get("outputs") or {}
        for r in checkpoint(stack).get("resources") or []
        if r["type"].startswith("kvmnet:")
    }


LOSS_SECONDS = 15


@pytest.mark.parametrize("when", ["before-connect", "at-connect"])
def test_packet_loss_during_refresh_then_converges(
    when: str, fault_stack: TestStack, lab: LabStatus, lab_api: Lab, clean: dict[str, Any]
) -> None:
    """15 s of 100% loss between operator and host, in the lab's switch, while `refresh` reads:
    from before it starts (the provider's connection times out, and the callers after it
    connect once the loss is over), or from the moment the provider's SSH session reaches the
    host (its handshake, or its first requests, stall). Each read either reads the host or
    fails the refresh with one line naming it; nothing is recorded by guess: the state keeps
    every resource, and no output changes (nothing changed on the host)."""
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    fault_stack.up()
    kept = recorded(fault_stack)
    sessions = len(sshd_processes(ns))  # the listener
    with contextlib.ExitStack() as loss:
        if when == "before-connect":
            loss.enter_context(frames_dropped(lab_api, lab.hosts[0].name))
        refresh = start(fault_stack, "refresh")
        if when == "at-connect":
            deadline = time.monotonic() + 120
            while len(sshd_processes(ns)) <= sessions:
                assert refresh.poll() is None, "refresh ended before it reached the host"
                assert time.monotonic() < deadline, "refresh never reached the host"
                time.sleep(0.005)
            loss.enter_context(frames_dropped(lab_api, lab.hosts[0].name))
        time.sleep(LOSS_SECONDS)  # the fault's length, not a wait for a condition
    output, _ = finish(refresh)
    if refresh.returncode != 0:
        assert_one_line_failure(refresh, output, f"root@{lab.hosts[0].address}:22: ")
    assert "Traceback" not in output, output
    assert recorded(fault_stack) == kept, output  # the host did not change: neither did the state
    fault_stack.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")  # the next up
    converges(fault_stack, lab, lab_api, clean, before)


def test_host_reboot_then_converges(
    fault_stack: TestStack, lab: LabStatus, lab_api: Lab, clean: dict[str, Any]
) -> None:
    """The host's namespace rebuilt (links, rules, sysctls and processes gone; same address and
    host key; kvmnet's run-dir records of before left in place): `refresh` + `up` restore
    everything, guests included."""
    ns = lab.hosts[0].namespace
    others = host_snapshot(lab_api, ns)["boot_records"]  # the lab's host serves the session
    fault_stack.up()
    reboot_host(lab_api, lab.hosts[0].name)
    booted = host_snapshot(lab_api, ns)
    assert qemus_in(ns) == []
    rules = [r for table in booted["iptables"].values() for r in table if r.startswith("-A")]
    assert rules == [] and BRIDGE_IP not in json.dumps(booted["addresses"]), booted
    assert booted["run_dir"], "the reboot left no stale record"
    assert set(clean["boot_records"]) <= set(booted["boot_records"]), "the reboot lost records"
    # After destroy the host is as freshly booted, but for the stale run-dir records, dnsmasq's
    # hosts files and the boot records the reboot kept, which go with the objects they
    # describe: the records there before this program's `up` stay.
    after = {**booted, "run_dir": {}, "dnsmasq_dir": {}, "boot_records": others}
    converges(fault_stack, lab, lab_api, clean, after, compare=comparable)


TWENTY_TAPS = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources import *

conn = HostSettings(**{conn!r})
br = Bridge("br", BridgeArgs(connection=conn, name="kc{x}br", addresses=["10.0.{n}.254/24"]))
taps = [TapPort(f"t{{i}}", TapPortArgs(connection=conn, name=f"kc{x}t{{i}}", bridge=br))
        for i in range(20)]
ForwardingSetting("fw", ForwardingSettingArgs(connection=conn))
MasqueradeRule("m", MasqueradeRuleArgs(connection=conn, source="10.0.{n}.0/24"))
"""


def test_two_stacks_on_one_host_at_the_same_moment(
    tmp_path: Path, lab: LabStatus, lab_api: Lab
) -> None:
    host = lab.hosts[0]
    conn = host_settings(host, sys.executable).to_props()
    before = host_snapshot(lab_api, host.namespace)
    stacks = [
        TestStack(
            tmp_path / x,
            textwrap.dedent(TWENTY_TAPS).format(conn=conn, x=x, n=n),
            project=f"kc{x}",
        )
        for x, n in (("a", 61), ("b", 62))
    ]
    try:
        ups = [start(s, "up") for s in stacks]
        for proc in ups:
            output, _ = finish(proc, 600)
            assert proc.returncode == 0, output
        links = json.loads(
            subprocess.run(
                ["ip", "netns", "exec", host.namespace, "ip", "-j", "link"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        masters = {link["ifname"]: link.get("master") for link in links}
        for x in ("a", "b"):
            assert all(masters.get(f"kc{x}t{i}") == f"kc{x}br" for i in range(20)), masters
        for s in stacks:  # each reads back what it made, untouched by the other
            s.refresh()
            s.preview_no_changes()
        destroys = [start(s, "destroy") for s in stacks]
        for proc in destroys:
            output, _ = finish(proc, 600)
            assert proc.returncode == 0, output
    finally:
        for s in stacks:
            s.remove()
    after = host_snapshot(lab_api, host.namespace)
    assert after == before, "\n".join(diff_snapshots(before, after))
