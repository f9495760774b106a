"""The isolated, routed and NAT models end to end: the real engine, a lab host over SSH,
real guests, and every cell of DESIGN.md's reachability table observed from inside them."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.probe import EXPECTED, GuestEndpoint, Outside, observe, ping
from kvmnet_lab.testing.console import GuestConsole
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack, config_stack

pytestmark = pytest.mark.e2e

@pytest.fixture()
def model_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    config = lab_stack_config(lab, image_dir=guest_image_dir())
    with config_stack(tmp_path, "e2e", {**config, "kvmnet:accelerator": "tcg"}) as stack:
        yield stack


def endpoints(stack: TestStack) -> list[GuestEndpoint]:
    guests = stack.outputs()["guests"]
    return [GuestEndpoint(n, g["address"], g["console"]) for n, g in sorted(guests.items())]


def observe_model(stack: TestStack, lab: LabStatus, bridge_ip: str | None) -> dict[str, object]:
    outside = Outside(lab.ext.namespace, lab.ext.address, lab.ext.echo_port)
    return observe(endpoints(stack), bridge_ip, lab.hosts[0].address, outside).as_dict()


def nat_table(lab_api: Lab, namespace: str) -> list[str]:
    out = lab_api.exec_in(
        namespace, ["iptables-legacy-save", "-t", "nat"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line.startswith("-A")]


def nat_rules(lab_api: Lab, namespace: str) -> list[str]:
    return [line for line in nat_table(lab_api, namespace) if "MASQUERADE" in line]


def outside_connect(lab: LabStatus, address: str, port: int) -> str:
    """What the outside host reads from address:port (empty when nothing answers)."""
    argv = [
        "ip",
        "netns",
        "exec",
        lab.ext.namespace,
        "busybox",
        "nc",
        "-w",
        "3",
        address,
        str(port),
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout.strip()


@pytest.mark.parametrize("model", ["isolated", "routed"])
def test_model_reachability_and_clean_destroy(
    model: str, model_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host_ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, host_ns)
    model_stack.config("kvmnet:model", model)
    up = model_stack.up()
    assert "created" in up.stdout

    observed = observe_model(model_stack, lab, None if model == "isolated" else "10.0.1.254")
    assert observed == EXPECTED[model]
    if model == "routed":
        # Both halves: ext saw the guest's private address (tcpdump in ext), and no reply came
        # back (the ping failed). observe() gathered both; spell them out.
        assert observed["seen"] == "guest" and observed["outside"] is False

    model_stack.preview_no_changes()
    model_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host_ns)) == []


def test_nat_model_crash_recovery_and_switch_to_routed(
    model_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host = lab.hosts[0]
    foreign = ["-t", "nat", "-A", "POSTROUTING", "-s", "172.31.0.0/16", "-j", "MASQUERADE"]
    lab_api.exec_in(host.namespace, ["iptables-legacy", *foreign], check=True)
    try:
        before = host_snapshot(lab_api, host.namespace)
        model_stack.config("kvmnet:model", "nat")
        for key, value in (("guest", "g1"), ("guest_port", "8080"), ("host_port", "8080")):
            model_stack.pulumi("config", "set", "--path", f"kvmnet:portForwards[0].{key}", value)
        model_stack.up()
        assert observe_model(model_stack, lab, "10.0.1.254") == EXPECTED["nat"]
        g1, g2 = endpoints(model_stack)
        with GuestConsole(g1.console) as console:
            # The outside host's echo service names the source it saw: the host's LAN address.
            echo = console.run(f"echo hi | nc -w 5 {lab.ext.address} {lab.ext.echo_port}", 30)
            assert f"peer {host.address} " in echo.output, echo.output
        # ours (tcp and udp to ports 1024-65535, the rest) and the foreign one
        assert len(nat_rules(lab_api, host.namespace)) == 4

        # The way in: a port forward from the host's 8080 to g1:8080, and nothing else.
        with GuestConsole(g1.console) as console:
            console.run("nc -ll -p 8080 -e /bin/hostname >/dev/null 2>&1 &")
            listening = (
                "for i in $(seq 50); do netstat -ltn | grep -q :8080 && break; sleep 0.2; done"
            )
            assert console.run(listening + "; netstat -ltn | grep -q :8080").status == 0
        assert outside_connect(lab, host.address, 8080) == "g1"
        assert outside_connect(lab, host.address, 8081) == ""
        model_stack.preview_no_changes()

        # A guest dies behind Pulumi's back: refresh sees it gone, up brings it back.
        pid = model_stack.outputs()["guests"]["g2"]["pid"]
        os.kill(pid, signal.SIGKILL)
        refresh = model_stack.refresh()
        assert "deleted" in refresh.stdout, refresh.stdout
        model_stack.up()
        new_pid = model_stack.outputs()["guests"]["g2"]["pid"]
        assert new_pid != pid
        with GuestConsole(g2.console) as console:
            console.wait_ready(90)
            assert ping(console, g1.address)

        # NAT -> routed on the same stack: the masquerade goes, guests and bridge stay.
        pids = {n: g["pid"] for n, g in model_stack.outputs()["guests"].items()}
        model_stack.config("kvmnet:model", "routed")
        switch = model_stack.up()
        assert "deleted" in switch.stdout and "created" not in switch.stdout, switch.stdout
        assert {n: g["pid"] for n, g in model_stack.outputs()["guests"].items()} == pids
        rules = nat_rules(lab_api, host.namespace)
        assert rules == ["-A POSTROUTING -s 172.31.0.0/16 -j MASQUERADE"], rules
        assert "DNAT" not in "".join(nat_table(lab_api, host.namespace))
        assert observe_model(model_stack, lab, "10.0.1.254") == EXPECTED["routed"]
        model_stack.destroy()
        assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []
    finally:
        lab_api.exec_in(
            host.namespace, ["iptables-legacy", *[a.replace("-A", "-D") for a in foreign]]
        )


TWO_ISOLATED = textwrap.dedent(
    """
    import pulumi
    from kvmnet_provider.program import connection_from_config, guest_image
    from kvmnet_provider.models import GuestSpec, IsolatedNetwork, NetworkArgs

    cfg = pulumi.Config("kvmnet")
    conn = connection_from_config(cfg)
    kernel, initrd = guest_image(cfg)
    for i, bridge in ((1, "br-a"), (2, "br-b")):
        cmdline = f"console=ttyS0 quiet kvmnet.name=g{i} kvmnet.ip=10.0.1.1{i}/24"
        guest = GuestSpec(name=f"g{i}", tap=f"vif{i}.0", mac=f"52:54:00:00:02:0{i}",
                          kernel=kernel, initrd=initrd, cmdline=cmdline, stop_timeout=2)
        net = IsolatedNetwork(f"iso{i}", NetworkArgs(connection=conn, bridge=bridge,
                              guests=[guest], accelerator="tcg"))
        pulumi.export(f"g{i}", net.guests[f"g{i}"].console_socket)
    """
)


def test_guests_on_different_isolated_bridges_cannot_meet(
    model_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host_ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, host_ns)
    model_stack.set_program(TWO_ISOLATED)
    model_stack.up()
    outs = model_stack.outputs()
    with GuestConsole(outs["g1"]) as g1, GuestConsole(outs["g2"]) as g2:
        g1.wait_ready(90)
        g2.wait_ready(90)
        assert not ping(g1, "10.0.1.12")
        assert not ping(g2, "10.0.1.11")
        # The same two guests do meet once their taps share a bridge: the "no" is the model's.
        subprocess.run(
            ["ip", "netns", "exec", host_ns, "ip", "link", "set", "vif2.0", "master", "br-a"],
            check=True,
        )
        assert ping(g1, "10.0.1.12")
    model_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host_ns)) == []


def guests_and_taps(stack: TestStack) -> dict[str, tuple[str, dict[str, object]]]:
    """Each QemuGuest's and TapPort's state, by URN: (id, inputs)."""
    found = stack.resources("QemuGuest") + stack.resources("TapPort")
    return {r["urn"]: (r["id"], r["inputs"]) for r in found}


def test_removing_a_middle_default_guest_leaves_the_others_untouched(
    model_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    """Guests without `tap` or `mac` get them from their names, so removing g2 of three
    deletes only g2 and its tap; g1 and g3 are neither moved nor replaced (with positional
    defaults g3 would want g2's tap, still held, and `up` would fail)."""
    host_ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, host_ns)
    guests = [{"name": f"g{i}", "address": f"10.0.1.1{i}"} for i in (1, 2, 3)]
    model_stack.config_values({"kvmnet:model": "isolated", "kvmnet:guests": guests})
    model_stack.up()
    built = host_snapshot(lab_api, host_ns)["links"]
    assert all(built[f"vm-g{i}"]["master"] == "br-in" for i in (1, 2, 3)), sorted(built)
    pids = {n: g["pid"] for n, g in model_stack.outputs()["guests"].items()}
    kept = {urn: s for urn, s in guests_and_taps(model_stack).items() if "g2" not in urn}
    assert len(kept) == 4, kept

    model_stack.config_values({"kvmnet:guests": [guests[0], guests[2]]})
    removed = model_stack.up()
    assert "- 2 deleted" in removed.stdout, removed.stdout
    assert "created" not in removed.stdout and "replaced" not in removed.stdout, removed.stdout
    assert guests_and_taps(model_stack) == kept  # same ids, same taps and MACs
    assert {n: g["pid"] for n, g in model_stack.outputs()["guests"].items()} == {
        "g1": pids["g1"],
        "g3": pids["g3"],
    }
    links = host_snapshot(lab_api, host_ns)["links"]
    assert "vm-g2" not in links
    for name in ("vm-g1", "vm-g3"):
        assert links[name]["ifindex"] == built[name]["ifindex"]
    model_stack.preview_no_changes()

    # The upgrade from positional defaults: g1 pinned to what an earlier version named it,
    # then back to its default. Each up replaces g1's tap and guest in one go; g3 stays.
    for pinned in ({"tap": "vif1.0", "mac": "52:54:00:00:01:01"}, {}):
        model_stack.config_values({"kvmnet:guests": [{**guests[0], **pinned}, guests[2]]})
        moved = model_stack.up()
        assert "replaced" in moved.stdout, moved.stdout
    guests_now = model_stack.outputs()["guests"]
    assert guests_now["g3"]["pid"] == pids["g3"] and guests_now["g1"]["pid"] != pids["g1"]
    links = host_snapshot(lab_api, host_ns)["links"]
    assert "vif1.0" not in links and links["vm-g1"]["master"] == "br-in"
    model_stack.preview_no_changes()
    model_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host_ns)) == []
