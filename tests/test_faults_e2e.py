"""Faults converge (real engine, lab host, test guests).

`pulumi` (with its language host and provider) killed with SIGKILL while a guest is being
created leaves pending operations in the state; what kvmnet's README tells the operator to
run clears them, and `refresh` + `up` then converge: the declared guest runs once, and a
destroy leaves the host as it was before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import HostStatus, Lab, LabStatus
from kvmnet_lab.testing import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack

pytestmark = pytest.mark.e2e

PROGRAM = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources import *

conn = HostSettings(**{conn!r})
bridge = Bridge("br", BridgeArgs(connection=conn, name="kfbr0"))
tap = TapPort("tap", TapPortArgs(connection=conn, name="kftap1", bridge=bridge))
guest = QemuGuest("g", QemuGuestArgs(
    connection=conn, name="kfg1", kernel={kernel!r}, initrd={initrd!r},
    cmdline="console=ttyS0 quiet panic=-1", nics=[GuestNicArgs(tap=tap, mac="52:54:00:6b:72:01")],
    accelerator="tcg", stop_timeout=1))
pulumi.export("pid", guest.pid)
"""

# What the README tells the operator to run after `pulumi` was killed (section "Faults").
RECOVERY = [["cancel", "--yes"], ["refresh", "--yes", "--skip-preview", "--clear-pending-creates"]]


def qemus_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and b"qemu" in argv[0] and b"-name" in argv and name.encode() in argv:
                found.append(int(entry.name))
    return found


@pytest.fixture
def fault_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    host: HostStatus = lab.hosts[0]
    image = guest_image_dir()
    conn = host_settings(host, sys.executable).to_props()
    program = textwrap.dedent(PROGRAM).format(
        conn=conn, kernel=str(image / "vmlinuz"), initrd=str(image / "initrd.img")
    )
    stack = TestStack(tmp_path, program, project="kfault")
    try:
        yield stack
    finally:
        stack.remove()
        for pid in qemus_named("kfg1"):  # nothing may survive a failed test
            os.kill(pid, signal.SIGKILL)


def pending_operations(stack: TestStack) -> list[dict[str, object]]:
    files = list((stack.ws.root / "backend").rglob("kfault/dev.json"))
    if not files:
        return []
    try:
        checkpoint = json.loads(files[0].read_text())
    except ValueError:
        return []  # being written
    return list(
        (checkpoint.get("checkpoint", {}).get("latest") or {}).get("pending_operations") or []
    )


def test_killed_mid_up_then_readme_recovery_converges(
    fault_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    up = subprocess.Popen(
        ["pulumi", "--non-interactive", "up", "--yes", "--skip-preview", "--stack", "dev"],
        cwd=fault_stack.dir,
        env=fault_stack.ws.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the engine, language host and provider
    )
    try:
        deadline = time.monotonic() + 120
        while not any(
            "QemuGuest" in str(op.get("resource", {}).get("type", ""))  # type: ignore[union-attr]
            for op in pending_operations(fault_stack)
        ):
            assert up.poll() is None, "up ended before the guest's create was under way"
            assert time.monotonic() < deadline, "the guest's create never started"
            time.sleep(0.05)
    finally:
        os.killpg(up.pid, signal.SIGKILL)  # the group this test started
        up.wait(30)
    assert pending_operations(fault_stack), "the kill left no pending operation"

    for args in RECOVERY:
        fault_stack.pulumi(*args)
    assert not pending_operations(fault_stack)
    fault_stack.up()
    pid = fault_stack.outputs()["pid"]
    assert qemus_named("kfg1") == [pid]  # one guest, the one the state knows
    fault_stack.preview_no_changes()
    fault_stack.destroy()
    assert qemus_named("kfg1") == []
    after = host_snapshot(lab_api, ns)
    assert after == before, "\n".join(diff_snapshots(before, after))


def agents_in(namespace: str) -> list[int]:
    """PIDs of kvmnet host agents in the lab host's namespace (this session's lab: ours)."""
    out = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for pid in out.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"kvmnet-agent-" in argv and b"rollback_main" not in argv:
            found.append(int(pid))
    return found


def test_agent_killed_mid_create_fails_in_one_line_then_up_converges(
    fault_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    up = subprocess.Popen(
        ["pulumi", "--non-interactive", "up", "--yes", "--skip-preview", "--stack", "dev"],
        cwd=fault_stack.dir,
        env=fault_stack.ws.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(
            "QemuGuest" in str(op.get("resource", {}).get("type", ""))  # type: ignore[union-attr]
            for op in pending_operations(fault_stack)
        ):
            assert up.poll() is None, "up ended before the guest's create was under way"
            assert time.monotonic() < deadline, "the guest's create never started"
            time.sleep(0.05)
        agents = agents_in(ns)
        assert agents, "no host agent to kill"
        for pid in agents:
            os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        output, _ = up.communicate(timeout=300)
        took = time.monotonic() - started
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(30)
    print(output)  # shown with -rP
    assert up.returncode != 0, output
    assert "Traceback" not in output, output
    assert any(
        "kvmnet:QemuGuest" in line or "the host agent" in line or "connection lost" in line
        for line in output.splitlines()
    ), output
    assert took < 200, took  # bounded: not the 120 s of an unanswered request, twice

    fault_stack.up()  # converges: the guest runs once, whatever the killed agent left
    pid = fault_stack.outputs()["pid"]
    assert qemus_named("kfg1") == [pid]
    fault_stack.preview_no_changes()
    fault_stack.destroy()
    assert qemus_named("kfg1") == []
    after = host_snapshot(lab_api, ns)
    assert after == before, "\n".join(diff_snapshots(before, after))


def sshd_processes(namespace: str) -> list[int]:
    """The lab host's sshd: its listener (which the lab started) and every session of it."""
    out = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for pid in out.split():
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except (OSError, IndexError):
            continue
        if argv0.startswith(b"sshd") or argv0.endswith(b"/sshd"):
            found.append(int(pid))
    return found


def cut_ssh(namespace: str) -> None:
    for pid in sshd_processes(namespace):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("when", ["before-up", "guest-create"])
def test_ssh_cut_fails_in_one_line_then_refresh_and_up_converge(
    when: str, fault_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    try:
        if when == "before-up":
            cut_ssh(ns)
        up = subprocess.Popen(
            ["pulumi", "--non-interactive", "up", "--yes", "--skip-preview", "--stack", "dev"],
            cwd=fault_stack.dir,
            env=fault_stack.ws.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            if when == "guest-create":
                deadline = time.monotonic() + 120
                while not any(
                    "QemuGuest" in str(op.get("resource", {}).get("type", ""))  # type: ignore[union-attr]
                    for op in pending_operations(fault_stack)
                ):
                    assert up.poll() is None, "up ended before the guest's create was under way"
                    assert time.monotonic() < deadline, "the guest's create never started"
                    time.sleep(0.05)
                cut_ssh(ns)
            started = time.monotonic()
            output, _ = up.communicate(timeout=300)
            took = time.monotonic() - started
        finally:
            if up.poll() is None:
                up.kill()
                up.wait(30)
        print(output)  # shown with -rP
        assert up.returncode != 0, output
        assert "Traceback" not in output and "Exception (client)" not in output, output
        assert f"root@{lab.hosts[0].address}:22: " in output, output
        assert took < 200, took
    finally:
        lab_api.up(hosts=len(lab.hosts))  # sshd back (idempotent for everything else)
    fault_stack.refresh()
    fault_stack.up()
    pid = fault_stack.outputs()["pid"]
    assert qemus_named("kfg1") == [pid]
    fault_stack.preview_no_changes()
    fault_stack.destroy()
    assert qemus_named("kfg1") == []
    after = host_snapshot(lab_api, ns)
    assert after == before, "\n".join(diff_snapshots(before, after))


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
        ups = [
            subprocess.Popen(
                ["pulumi", "--non-interactive", "up", "--yes", "--skip-preview", "--stack", "dev"],
                cwd=s.dir,
                env=s.ws.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for s in stacks
        ]
        outputs = [p.communicate(timeout=600)[0] for p in ups]
        for proc, output in zip(ups, outputs, strict=True):
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
        for s in stacks:
            s.preview_no_changes()
        destroys = [
            subprocess.Popen(
                ["pulumi", "--non-interactive", "destroy", "--yes", "--skip-preview"]
                + ["--stack", "dev"],
                cwd=s.dir,
                env=s.ws.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for s in stacks
        ]
        for proc in destroys:
            output = proc.communicate(timeout=600)[0]
            assert proc.returncode == 0, output
    finally:
        for s in stacks:
            s.remove()
    after = host_snapshot(lab_api, host.namespace)
    assert after == before, "\n".join(diff_snapshots(before, after))
