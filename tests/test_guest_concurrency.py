"""Guests that take their time to stop do not hold up their host: real engine, lab host, real
QEMU guests (TCG) whose test image ignores ACPI power-down, so every stop waits out its whole
stop_timeout before QEMU is told to quit.

Nothing here asserts on wall time. Overlap is proved from the engine's own event log: each
deletion waits a full stop_timeout on the host, so a host serving one stop at a time could
not finish two of them less than a stop_timeout apart.
"""

from __future__ import annotations

import itertools
import json
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
from kvmnet_lab.testing.stack import TestStack
from test_guest_resource import is_guest, kill_guest, namespace_qemus, settings, wait_until

from kvmnet_provider.connection import agent_session
from kvmnet_provider.connection.session import AgentSession

GUESTS = 8
STOP_TIMEOUT = 3
MEMORY_MIB = 64  # 8 TCG guests share 2 cores with the rest of the machine: keep them small
CMDLINE = "console=ttyS0 quiet panic=-1"

PROGRAM = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources.guest import GuestNicArgs, QemuGuest, QemuGuestArgs
from kvmnet_provider.resources.links import Bridge, BridgeArgs, TapPort, TapPortArgs

conn = HostSettings(**{conn!r})
bridge = Bridge("br", BridgeArgs(connection=conn, name="kcbr0"))
for i in range({guests}):
    tap = TapPort(f"tap{{i}}", TapPortArgs(connection=conn, name=f"kctap{{i}}", bridge=bridge))
    guest = QemuGuest(
        f"g{{i}}",
        QemuGuestArgs(
            connection=conn,
            name=f"kcg{{i}}",
            memory_mib={memory},
            kernel={kernel!r},
            initrd={initrd!r},
            cmdline={cmdline!r},
            nics=[GuestNicArgs(tap=tap, mac=f"52:54:00:6b:72:{{i:02x}}")],
            accelerator="tcg",
            stop_timeout={stop_timeout},
        ),
    )
    pulumi.export(f"g{{i}}_pid", guest.pid)
"""


def engine_deletions(events: str, type_suffix: str) -> dict[str, tuple[int, int]]:
    """(started, finished) of each resource the engine deleted, from its own events
    (`pulumi destroy --json`: one JSON event a line, timestamps in whole seconds)."""
    started: dict[str, int] = {}
    finished: dict[str, int] = {}
    for line in events.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        for kind, into in (("resourcePreEvent", started), ("resOutputsEvent", finished)):
            meta = (event.get(kind) or {}).get("metadata") or {}
            if meta.get("op") == "delete" and str(meta.get("type", "")).endswith(type_suffix):
                into[meta["urn"].rsplit("::", 1)[-1]] = int(event["timestamp"])
    return {name: (started[name], finished[name]) for name in finished}


@dataclass
class GuestStack:
    stack: TestStack
    seen: list[tuple[int, str]] = field(default_factory=list)  # (pid, guest name) started


@pytest.fixture
def guest_stack(tmp_path: Path, lab: LabStatus) -> Iterator[GuestStack]:
    image = guest_image_dir()
    program = textwrap.dedent(PROGRAM).format(
        conn=settings(lab.hosts[0]).to_props(),
        guests=GUESTS,
        memory=MEMORY_MIB,
        kernel=str(image / "vmlinuz"),
        initrd=str(image / "initrd.img"),
        cmdline=CMDLINE,
        stop_timeout=STOP_TIMEOUT,
    )
    run = GuestStack(TestStack(tmp_path, program, project="kqconc"))
    try:
        yield run
    finally:
        run.stack.remove()
        for pid, name in run.seen:  # nothing may survive, even a failed test
            kill_guest(pid, name)


@pytest.mark.e2e
def test_destroy_stops_guests_side_by_side(
    guest_stack: GuestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host, stack = lab.hosts[0], guest_stack.stack
    before = host_snapshot(lab_api, host.namespace)
    stack.up()
    outs = stack.outputs()
    pids = {f"kcg{i}": outs[f"g{i}_pid"] for i in range(GUESTS)}
    guest_stack.seen.extend((pid, name) for name, pid in pids.items())
    assert all(is_guest(pid, name) for name, pid in pids.items()), pids

    events = stack.pulumi("destroy", "--yes", "--skip-preview", "--json").stdout

    assert namespace_qemus(host.namespace) == []
    assert not [name for name, pid in pids.items() if is_guest(pid, name)]
    after = host_snapshot(lab_api, host.namespace)
    assert after == before, "\n".join(diff_snapshots(before, after))

    deletions = engine_deletions(events, "QemuGuest")
    assert sorted(deletions) == sorted(f"g{i}" for i in range(GUESTS)), deletions
    durations = {name: end - start for name, (start, end) in deletions.items()}
    print(f"engine-reported guest deletions (start, end, s): {sorted(deletions.items())}")
    # Each deletion waited out the ignored power-down (a second of slack: whole seconds) ...
    assert all(d >= STOP_TIMEOUT - 1 for d in durations.values()), durations
    # ... so one stop at a time would finish them at least a stop_timeout apart. Some finish
    # closer together than that: the host ran them side by side.
    ends = sorted(end for _, end in deletions.values())
    closest = min(b - a for a, b in itertools.pairwise(ends))
    assert closest < STOP_TIMEOUT, ends


@pytest.mark.e2e
def test_tap_create_is_answered_while_a_guest_stop_waits(lab: LabStatus, lab_api: Lab) -> None:
    """The stop goes out first and waits out the ignored power-down on the host; a tap create
    sent after it comes back first. One operation at a time could only answer in order."""
    host = lab.hosts[0]
    agent = agent_session(settings(host))
    image = guest_image_dir()
    guest = {
        "owner": "kqconc/dev/QemuGuest/w",
        "name": "kcw",
        "memory_mib": MEMORY_MIB,
        "kernel": str(image / "vmlinuz"),
        "initrd": str(image / "initrd.img"),
        "cmdline": CMDLINE,
        "accelerator": "tcg",
    }
    bridge = {"name": "kcwbr", "owner": "kqconc/dev/Bridge/b", "stp": False, "forward_delay": 0}
    tap = {"name": "kcwtap", "owner": "kqconc/dev/TapPort/t", "bridge": "kcwbr"}
    pid = agent.call("guest.start", guest, timeout=180)["pid"]
    answered: list[str] = []
    try:
        agent.call("bridge.create", bridge)

        def stop() -> Any:
            args = {"name": "kcw", "owner": guest["owner"], "stop_timeout": 5}
            result = agent.call("guest.stop", args, timeout=180)
            answered.append("guest.stop")
            return result

        with ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(stop)
            wait_until("the stop to be sent", lambda: sent(agent, "guest.stop"), 30)
            agent.call("tap.create", tap)
            answered.append("tap.create")
            links = json.loads(run_in(lab_api, host.namespace, ["ip", "-j", "link"]))
            assert "kcwtap" in {link["ifname"] for link in links}
            stopped = stopping.result(timeout=180)
        assert answered == ["tap.create", "guest.stop"]
        # it did wait: the power-down was ignored for the whole stop_timeout, then QMP quit
        assert stopped == {"deleted": True, "how": "quit over QMP"}, stopped
        assert not is_guest(pid, "kcw")
    finally:
        for name, owner in ((tap["name"], tap["owner"]), (bridge["name"], bridge["owner"])):
            agent.call("link.delete", {"name": name, "owner": owner})
        kill_guest(pid, "kcw")


def sent(session: AgentSession, op: str) -> bool:
    with session._turn:
        return any(w.op == op and w.sent for w in session._waiters.values())
