"""Guest readiness and addresses end to end: the real engine, a lab host, busybox guests that
lease their address from the network's dnsmasq and print KVMNET-GUEST-READY after it."""

from __future__ import annotations

import ipaddress
import json
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.console import GuestConsole
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack, config_stack

pytestmark = pytest.mark.e2e

# Guests without a reservation on a NAT network with DHCP; `ready` per guest from the config.
PROGRAM = textwrap.dedent(
    """
    import pulumi
    from kvmnet_provider.models import GuestSpec, NatNetwork, NetworkArgs
    from kvmnet_provider.program import connection_from_config, guest_image

    cfg = pulumi.Config("kvmnet")
    conn = connection_from_config(cfg)
    kernel, initrd = guest_image(cfg)
    test = pulumi.Config("readytest")  # this program's own keys
    ready = test.get_object("ready") or {}
    guests = [
        GuestSpec(name=n, tap=f"vif{i}.0", mac=f"52:54:00:00:02:0{i}", kernel=kernel,
                  initrd=initrd, cmdline=f"console=ttyS0 quiet kvmnet.name={n} kvmnet.ip=dhcp",
                  stop_timeout=2, ready=ready.get(n))
        for i, n in enumerate(test.get_object("names") or ["g1"], start=1)
    ]
    net = NatNetwork("net", NetworkArgs(connection=conn, gateway="10.0.1.254", guests=guests,
                                        accelerator="tcg"))
    pulumi.export("guests", {n: {"addresses": g.addresses, "console": g.console_socket,
                                 "console_log": g.console_log}
                             for n, g in net.guests.items()})
    """
)
DYNAMIC = (ipaddress.IPv4Address("10.0.1.128"), ipaddress.IPv4Address("10.0.1.253"))


@pytest.fixture()
def ready_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    config = lab_stack_config(lab, image_dir=guest_image_dir())
    with config_stack(tmp_path, "ready", {**config, "kvmnet:accelerator": "tcg"}) as stack:
        stack.set_program(PROGRAM)
        yield stack


def eth0_address(console: GuestConsole) -> str:
    out = console.run("ip -4 -o addr show dev eth0", 30).output
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    assert found, out
    return found.group(1)


def guest_outputs(stack: TestStack) -> dict[str, Any]:
    guests: dict[str, Any] = stack.outputs()["guests"]
    return guests


def engine_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def status_while_waiting(events: list[dict[str, Any]], urn: str) -> list[str]:
    """The status messages (ephemeral, on the resource's row) the engine had for `urn`
    before the resource's outputs arrived, i.e. while its create waited."""
    said = []
    for event in events:
        if event.get("resOutputsEvent", {}).get("metadata", {}).get("urn") == urn:
            return said
        diag = event.get("diagnosticEvent") or {}
        if diag.get("urn") == urn and diag.get("ephemeral"):
            said.append(diag["message"])
    raise AssertionError(f"no outputs for {urn} in the engine's events")


def test_up_waits_for_readiness_and_exports_the_leased_address(
    ready_stack: TestStack,
    lab: LabStatus,
    lab_api: Lab,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    ready = {"g1": {"console": "KVMNET-GUEST-READY g1", "lease": True, "timeout": 600}}
    ready_stack.config_values({"readytest:ready": ready})
    event_log = tmp_path / "up-events.jsonl"
    with monkeypatch.context() as debug:
        debug.setenv("PULUMI_DEBUG_COMMANDS", "true")  # the CLI offers --event-log with it
        first = ready_stack.pulumi("up", "--yes", "--skip-preview", "--event-log", str(event_log))
    g1 = guest_outputs(ready_stack)["g1"]
    # while it waited, the guest's own row said so: a status, not a log line
    (guest,) = ready_stack.resources("QemuGuest")
    said = status_while_waiting(engine_events(event_log), guest["urn"])
    assert said and said[0].startswith("guest g1: waiting for "), said
    rows = first.stdout.splitlines()  # not a terminal: the row is printed as its status changes
    assert any("QemuGuest net-g1 creating" in r and "guest g1: waiting for" in r for r in rows)
    kept = first.stdout.partition("Diagnostics:")[2]
    assert "guest g1: waiting" not in kept, first.stdout  # not kept as a log line
    # up returned only once the guest had its lease and said so on its console
    assert "KVMNET-GUEST-READY g1" in Path(g1["console_log"]).read_text(errors="replace")
    (leased,) = g1["addresses"]
    assert DYNAMIC[0] <= ipaddress.IPv4Address(leased) <= DYNAMIC[1], leased
    ready_stack.preview_no_changes()

    with GuestConsole(g1["console"]) as console:
        console.wait_ready(60)
        assert eth0_address(console) == leased
        # The guest gives its lease back and asks for another address: refresh shows it.
        other = "10.0.1.200" if leased != "10.0.1.200" else "10.0.1.201"
        console.run("killall -USR2 udhcpc; sleep 1; killall udhcpc", 30)
        said = console.run(
            f"udhcpc -i eth0 -s /etc/udhcpc.script -x hostname:g1 -n -q -t 5 -r {other}", 90
        ).output
        assert eth0_address(console) == other, said
        ready_stack.refresh()  # the guest's state; the stack's outputs at the next up
        (state,) = ready_stack.resources("QemuGuest")
        assert state["outputs"]["addresses"] == [other]

        # tcp: a port that answers in the guest (busybox nc) makes an update of `ready` pass.
        console.send("while true; do nc -l -p 8080 </dev/null; done &\n")
        time.sleep(2)
        ready["g1"] = {"tcp": 8080, "timeout": 60}
        ready_stack.config_values({"readytest:ready": ready})
        done = ready_stack.up()
        assert "error" not in done.stdout.lower(), done.stdout
        assert guest_outputs(ready_stack)["g1"]["addresses"] == [other]

    # A second guest waiting for a port nothing listens on: up fails in one line naming the
    # guest, the wait and the console's last line; the guest that never got ready is gone.
    ready["g2"] = {"tcp": 5, "timeout": 5}
    ready_stack.config_values({"readytest:names": ["g1", "g2"], "readytest:ready": ready})
    failed = ready_stack.up(check=False)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0, said
    assert "Traceback" not in said, said
    line = next(li for li in said.splitlines() if "guest g2 on" in li and "not ready" in li)
    assert "within 5 s: waited for tcp port 5" in line, line
    assert "last console line: '" in line, line
    assert not [r for r in ready_stack.resources("QemuGuest") if r["outputs"]["name"] == "g2"]
    assert "g2" not in str([p for p in host_snapshot(lab_api, ns)["processes"] if "qemu" in p[0]])

    ready_stack.config_values({"readytest:names": ["g1"]})
    ready_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, ns)) == []
