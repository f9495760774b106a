"""A network proves its row: NetworkCheck's probe through the real engine on a lab host.

Routed, then NAT, then isolated on one stack (a model switch updates the check): each `up`
verifies and passes. A DROP that kvmnet does not know about (iptables-legacy, in FORWARD
before kvmnet's jump; a DROP on INPUT from the bridge; on the nftables backend, a foreign
table's forward chain) makes the next verify fail `up` in one line naming that rule. A probe
left by a killed run is removed by the next verify; `pulumi up` killed (SIGKILL, the engine and
its provider) while its probe is on the bridge leaves nothing behind either; and no probe
leaves anything behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack, config_stack

from kvmnet_provider.agent.verify.checks import probe_links

pytestmark = pytest.mark.e2e

NOISE = ("Traceback", "Exception (client)", "Program failed with")
FOREIGN_DROP = ["FORWARD", "-s", "10.0.1.0/24", "-j", "DROP"]
FOREIGN_ACCEPT = ["FORWARD", "-d", "10.0.1.0/24", "-j", "ACCEPT"]
ROUTED = ["gateway", "outside", "dns", "dhcp", "inbound"]
NAT = [*ROUTED, "forwards"]
INPUT_DROP = ["INPUT", "-i", "br-in", "-j", "DROP"]


def stack_on(tmp_path: Path, lab: LabStatus, backend: str) -> Iterator[TestStack]:
    config = lab_stack_config(lab, image_dir=guest_image_dir())
    config.update(
        {
            "kvmnet:accelerator": "tcg",
            "kvmnet:firewallBackend": backend,  # where the test's foreign rules go
            "kvmnet:guests": [{"name": "g1", "address": "10.0.1.11"}],
            # NAT only; g1 need not be up: the check follows the forward's first packet
            "kvmnet:portForwards": [{"guest": "g1", "guest_port": 8080, "host_port": 8080}],
        }
    )
    with config_stack(tmp_path, "verify", config) as stack:
        yield stack


@pytest.fixture()
def verify_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    yield from stack_on(tmp_path, lab, "iptables")


@pytest.fixture()
def nft_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    yield from stack_on(tmp_path, lab, "nftables")


def the_check(stack: TestStack) -> dict[str, Any]:
    (check,) = stack.resources("NetworkCheck")
    outputs: dict[str, Any] = check["outputs"]
    return outputs


def one_line(text: str, fragment: str) -> list[str]:
    """The lines of `text` holding `fragment`: at least one, and no traceback anywhere."""
    for noise in NOISE:
        assert noise not in text, text
    lines = [line for line in text.splitlines() if fragment in line]
    assert lines, text
    return lines


def check_again(stack: TestStack, fragment: str) -> list[str]:
    """`up --replace` of the stack's NetworkCheck (nothing else changed): it must fail, with
    one line holding `fragment`; those lines."""
    (check,) = stack.resources("NetworkCheck")
    failed = stack.pulumi("up", "--yes", "--skip-preview", "--replace", check["urn"], check=False)
    assert failed.returncode != 0, failed.stdout
    return one_line(failed.stdout + failed.stderr, fragment)


def has_link(lab_api: Lab, namespace: str, name: str) -> bool:
    found = lab_api.exec_in(namespace, ["ip", "link", "show", "dev", name], capture_output=True)
    return found.returncode == 0


def probes_of(namespace: str, host_end: str) -> list[int]:
    """PIDs of the probe processes of the lab host `namespace` named `host_end`: their
    arguments name both, the namespace by its inode (other labs' hosts may run a network of
    the same name at the same time; all namespaces share one PID space)."""
    words = {host_end.encode(), str(os.stat(f"/run/netns/{namespace}").st_ino).encode()}
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue  # gone meanwhile
        if words <= set(argv):
            found.append(int(entry.name))
    return found


def kill_up_during_the_check(stack: TestStack, lab_api: Lab, namespace: str, owner: str) -> None:
    """`up --replace` of the stack's NetworkCheck in the background, SIGKILLed (with its
    plugins) once the check's probe is attached to the bridge and its process runs."""
    (check,) = stack.resources("NetworkCheck")
    host_end, _ = probe_links(owner)
    up = stack.start("up", "--yes", "--skip-preview", "--replace", check["urn"])
    try:
        deadline = time.monotonic() + 120
        while not (has_link(lab_api, namespace, host_end) and probes_of(namespace, host_end)):
            assert up.poll() is None, "up ended before its probe was attached"
            assert time.monotonic() < deadline, "no probe attached"
            time.sleep(0.05)
    finally:
        stack.kill_run(up)


def wait_for_snapshot(lab_api: Lab, namespace: str, expected: dict[str, Any]) -> float:
    """Seconds until the host's snapshot equals `expected` (at most the probe's own time
    limits); fails with the difference."""
    started = time.monotonic()
    while True:
        now = host_snapshot(lab_api, namespace)
        if now == expected:
            return time.monotonic() - started
        if time.monotonic() - started > 90:
            raise AssertionError("\n".join(diff_snapshots(expected, now)))
        time.sleep(0.5)


def iptables(lab_api: Lab, namespace: str, *args: str, check: bool = True) -> None:
    lab_api.exec_in(namespace, ["iptables-legacy", *args], check=check)


def test_models_verify_and_a_foreign_drop_fails_up_in_one_line(
    verify_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host = lab.hosts[0]
    before = host_snapshot(lab_api, host.namespace)
    # Routed: the gateway answers, the outside does not (its reply has no way back).
    verify_stack.config("kvmnet:model", "routed")
    verify_stack.up()
    routed = the_check(verify_stack)
    assert routed["passed"] == ROUTED, routed["checks"]
    outside = next(c for c in routed["checks"] if c["check"] == "outside")
    assert "no answer" in outside["reason"], outside
    assert "the host itself reaches it" in outside["reason"], outside  # a refusal, not a dead end
    inbound = next(c for c in routed["checks"] if c["check"] == "inbound")
    assert "connected to" in inbound["reason"], inbound  # a neighbour with a route gets in

    # NAT: the same probe now reaches the host's default gateway.
    verify_stack.config("kvmnet:model", "nat")
    verify_stack.up()
    nat = the_check(verify_stack)
    assert nat["passed"] == NAT, nat["checks"]
    assert nat["checked_target"] == lab.gateway  # the host's default gateway, reached
    reasons = {c["check"]: c["reason"] for c in nat["checks"]}
    assert "connected" not in reasons["inbound"], reasons  # the neighbour is refused...
    assert "tcp/8080 -> 10.0.1.11:8080 translated" in reasons["forwards"], reasons  # ...but this
    made = host_snapshot(lab_api, host.namespace)
    verify_stack.preview_no_changes()  # nothing changed: no probe

    # A probe left by a killed run (its veth pair, before the peer moved): the next verify
    # finds it by the network's name and removes it.
    host_end, peer = probe_links(nat["owner"])
    lab_api.exec_in(
        host.namespace, ["ip", "link", "add", host_end, "type", "veth", "peer", "name", peer],
        check=True,
    )  # fmt: skip
    target = f"{lab.ext.address}:{lab.ext.echo_port}"
    verify_stack.config("kvmnet:verifyTarget", target)  # a TCP connect this time
    verify_stack.up()
    again = the_check(verify_stack)
    assert again["checked_target"] == target and again["checked_at"] >= nat["checked_at"]
    assert diff_snapshots(made, host_snapshot(lab_api, host.namespace)) == []

    # `up` killed with its provider while the probe is on the bridge: the host's agent outlives
    # its SSH session, finishes the check and takes the probe away (its `finally`), with no
    # later run. The engine had deleted the old check first (kvmnet replaces delete-first), so
    # after the README's recovery the state holds it pending replacement, and the next `up`
    # runs the check again.
    kill_up_during_the_check(verify_stack, lab_api, host.namespace, nat["owner"])
    took = wait_for_snapshot(lab_api, host.namespace, made)
    print(f"the killed run's probe was gone {took:.1f} s after the kill")
    assert probes_of(host.namespace, host_end) == []  # its process too
    verify_stack.recover_after_kill()
    (pending,) = verify_stack.resources("NetworkCheck")
    assert pending.get("pendingReplacement") is True, pending
    verify_stack.up()
    assert the_check(verify_stack)["passed"] == NAT
    verify_stack.preview_no_changes()
    assert diff_snapshots(made, host_snapshot(lab_api, host.namespace)) == []

    # A DROP kvmnet does not know about, above its jump: the guests are cut off, and the next
    # up (its check's settings changed) says which rule did it. With verifyOnRefresh (set
    # while all was well), refresh probes again and shows the same as the check's drift.
    verify_stack.pulumi("config", "set", "--path", "kvmnet:verifyOnRefresh", "true")
    verify_stack.up()
    iptables(lab_api, host.namespace, "-I", *FOREIGN_DROP)
    try:
        verify_stack.pulumi("config", "rm", "kvmnet:verifyTarget")
        failed = verify_stack.up(check=False)
        assert failed.returncode != 0, failed.stdout
        lines = one_line(failed.stdout + failed.stderr, "verify outside failed")
        assert "net (nat)" in lines[0] and host.address in lines[0], lines[0]
        assert "'-A FORWARD -s 10.0.1.0/24 -j DROP'" in lines[0], lines[0]
        assert "fix:" in lines[0], lines[0]
        refreshed = verify_stack.refresh()
        assert refreshed.returncode == 0, refreshed.stdout  # drift, not an error
        failing = str(the_check(verify_stack)["failing"])
        assert "verify outside failed" in failing, failing
        assert "'-A FORWARD -s 10.0.1.0/24 -j DROP'" in failing, failing
    finally:
        iptables(lab_api, host.namespace, "-D", *FOREIGN_DROP)
    assert diff_snapshots(made, host_snapshot(lab_api, host.namespace)) == []  # no probe left

    # A DROP on the host's INPUT from the bridge: DNS and DHCP go silent (the gateway still
    # answers ARP, and forwards). With nothing changed, `up --replace` of the check runs it
    # again.
    iptables(lab_api, host.namespace, "-I", *INPUT_DROP)
    try:
        lines = check_again(verify_stack, "verify dns failed (and 1 more)")
        assert "blocked by filter INPUT rule '-A INPUT -i br-in -j DROP'" in lines[0], lines[0]
    finally:
        iptables(lab_api, host.namespace, "-D", *INPUT_DROP)
    verify_stack.up()  # the check was deleted by the replace: made again, and passing
    assert the_check(verify_stack)["passed"] == NAT

    # An ACCEPT kvmnet does not know about, above its jump: the outside gets into the NAT
    # network, and verify names that rule.
    iptables(lab_api, host.namespace, "-I", *FOREIGN_ACCEPT)
    try:
        lines = check_again(verify_stack, "verify inbound failed")
        assert "reached, but a nat network must not" in lines[0], lines[0]
        assert "let in by filter FORWARD rule '-A FORWARD -d 10.0.1.0/24 -j ACCEPT'" in lines[0]
        assert "fix: delete that rule" in lines[0], lines[0]
    finally:
        iptables(lab_api, host.namespace, "-D", *FOREIGN_ACCEPT)
    verify_stack.up()
    assert diff_snapshots(made, host_snapshot(lab_api, host.namespace)) == []  # no probe left

    # Isolated, verified on request: nothing leaves the bridge (the masquerade, deleted last
    # by the engine, is still there during this check: the bridge's rules refuse anyway).
    verify_stack.pulumi("config", "set", "--path", "kvmnet:verify", "true")
    verify_stack.config("kvmnet:model", "isolated")
    verify_stack.up()
    isolated = the_check(verify_stack)
    assert isolated["passed"] == ["outside"], isolated["checks"]

    verify_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []


def test_a_foreign_nft_chain_is_named(nft_stack: TestStack, lab: LabStatus, lab_api: Lab) -> None:
    """On the nftables backend: a table of someone else's with a forward chain that drops the
    subnet cuts a NAT network off, and the failed verify names that table and chain."""
    host = lab.hosts[0]
    before = host_snapshot(lab_api, host.namespace)
    nft_stack.config("kvmnet:model", "nat")
    nft_stack.up()
    assert the_check(nft_stack)["passed"] == NAT
    nft = ["nft", "add"]
    commands = [
        [*nft, "table", "ip", "foreign"],
        [*nft, "chain", "ip", "foreign", "cutoff", "{ type filter hook forward priority 0 ; }"],
        [*nft, "rule", "ip", "foreign", "cutoff", "ip", "saddr", "10.0.1.0/24", "drop"],
    ]
    try:
        for argv in commands:
            lab_api.exec_in(host.namespace, argv, check=True)
        lines = check_again(nft_stack, "verify outside failed")
        assert "blocked by table ip foreign chain cutoff" in lines[0], lines[0]
    finally:
        lab_api.exec_in(host.namespace, ["nft", "delete", "table", "ip", "foreign"])
    nft_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []
