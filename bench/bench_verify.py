#!/usr/bin/env python3
"""Benchmark: what a NAT network's `verify` costs. `pulumi up --skip-preview` and `destroy` of
one host's NAT network with 2 test-image guests (TCG), `kvmnet:verify` true (the NAT default)
against the same stack with `verify` false, rounds interleaved in the same run; the
NetworkCheck's own create time from the state's timestamps, and one `network.verify` round
trip on an open agent session. Optionally (`--ready-rounds N`), a guest's `ready` wait
(`ready: {console: KVMNET-GUEST-READY}`) against `up` without it plus a script polling the
guests' console logs.

Run as root from the repo root:
    .venv/bin/python bench/bench_verify.py [--rounds 3] [--ready-rounds 0]

It brings up its own lab (one host, a unique name "kv<hex>") and always takes it down. Not a
test: it asserts nothing about wall time; it fails only when a step fails.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench_dhcp import netns_dir
from bench_nat import load, own_lab
from kvmnet_lab.hostconfig import host_settings, lab_stack_config
from kvmnet_lab.lab import HostStatus, Lab, LabStatus
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import STACK_PROGRAM, TestStack
from marks import timed_up

from kvmnet_provider.connection import agent_session
from kvmnet_provider.connection.session import AgentSession
from kvmnet_provider.resources.network_check import VERIFY_TIMEOUT, NetworkCheckProvider

GUESTS = (("g1", "10.0.1.11"), ("g2", "10.0.1.12"))
READY = "KVMNET-GUEST-READY"
READY_TIMEOUT = 300.0


@dataclass
class Variant:
    key: str
    stack: TestStack
    rounds: list[dict[str, float]] = field(default_factory=list)


def stack_config(status: LabStatus, verify: bool, ready: bool = False) -> dict[str, Any]:
    """Config as `lab_stack_config` writes it: NAT (DHCP on, its default), TCG, 2 guests."""
    config = lab_stack_config(status, model="nat", image_dir=guest_image_dir())
    guests: list[dict[str, Any]] = [{"name": n, "address": a} for n, a in GUESTS]
    if ready:
        for guest in guests:
            guest["ready"] = {"console": READY, "timeout": int(READY_TIMEOUT)}
    config.update({"kvmnet:accelerator": "tcg", "kvmnet:guests": guests, "kvmnet:verify": verify})
    return config


def new_variant(work: Path, key: str, config: dict[str, Any]) -> Variant:
    stack = TestStack(work / key, STACK_PROGRAM, project="kvbench")
    stack.config_values(config)
    return Variant(key, stack)


def created(resource: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(resource["created"]))


def check_create_seconds(resources: list[dict[str, Any]], check: dict[str, Any]) -> float:
    """The NetworkCheck's create as the engine recorded it: from the last of the resources it
    depends on being created to its own creation (it runs after all of its network's)."""
    before = set(check.get("dependencies") or [])
    ends = [created(r) for r in resources if r["urn"] in before and r.get("created")]
    if not ends:  # no recorded dependencies: every resource created before it
        ends = [created(r) for r in resources if r.get("created") and created(r) < created(check)]
    return (created(check) - max(ends)).total_seconds()


def direct_verify(agent: AgentSession, outputs: dict[str, Any]) -> float:
    """One `network.verify` as the provider sends it (NetworkCheckProvider._verify), timed."""
    spec = {n: outputs.get(n) for n in NetworkCheckProvider.fields if n not in ("network", "watch")}
    args = {"owner": outputs["owner"], **spec, "skip": []}
    t = time.monotonic()
    result = agent.call("network.verify", args, VERIFY_TIMEOUT)
    took = time.monotonic() - t
    if not result.get("passed"):
        raise RuntimeError(f"network.verify did not pass: {result.get('checks')}")
    return took


def verify_round(v: Variant, agent: AgentSession | None, direct: int) -> dict[str, float]:
    seen: dict[str, float] = {}
    try:
        t = time.monotonic()
        v.stack.up()
        seen["up"] = time.monotonic() - t
        resources = v.stack.resources()
        seen["resources"] = sum(1 for r in resources if "dynamic/kvmnet:" in r["type"])
        checks = [r for r in resources if r["type"].endswith("kvmnet:NetworkCheck")]
        if (agent is not None) != bool(checks):
            raise RuntimeError(f"{v.key}: NetworkChecks in the state: {len(checks)}")
        if agent is not None:
            (check,) = checks
            seen["check"] = check_create_seconds(resources, check)
            seen["passed"] = len(check["outputs"].get("passed") or [])
            for k in range(direct):
                seen[f"direct{k}"] = direct_verify(agent, check["outputs"])
    finally:
        t = time.monotonic()
        v.stack.destroy()
        seen["destroy"] = time.monotonic() - t
    return seen


def watch(root: Path, t0: float, seen: dict[str, float], stop: threading.Event) -> None:
    """Note when each guest's console log first says READY (20 ms polls)."""
    logs = {name: root / "guests" / name / "console.log" for name, _ in GUESTS}
    while not stop.is_set():
        for name, log in logs.items():
            try:
                text = log.read_bytes()
            except OSError:
                continue
            if name not in seen and READY.encode() in text:
                seen[name] = time.monotonic() - t0
        time.sleep(0.02)


def ready_round(v: Variant, root: Path) -> dict[str, float]:
    """From `up` start: when `up` returned, when both guests' READY was on their consoles."""
    seen = timed_up(
        v.stack,
        functools.partial(watch, root),
        lambda seen: all(name in seen for name, _ in GUESTS),
        READY_TIMEOUT,
        f"{v.key}: guests not READY",
        poll=0.02,
    )
    seen["guests"] = max(seen[name] for name, _ in GUESTS)
    seen["done"] = max(seen["up"], seen["guests"])
    return seen


def clean(lab: Lab, h: HostStatus, before: dict[str, Any], what: str, dirty: list[str]) -> None:
    diff = diff_snapshots(before, host_snapshot(lab, h.namespace))
    if diff:
        dirty.append(f"{what}: {'; '.join(diff)}")
        print(f"  NOT CLEAN after {what}: {diff}", flush=True)


def shown(seen: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in seen.items())


def run_verify(
    lab: Lab, h: HostStatus, work: Path, rounds: int, direct: int, dirty: list[str]
) -> tuple[Variant, Variant]:
    status = lab.status()
    on = new_variant(work, "verify-on", stack_config(status, verify=True))
    off = new_variant(work, "verify-off", stack_config(status, verify=False))
    agent = agent_session(host_settings(h, sys.executable))
    try:
        agent.call("ping", {})  # connected (and the agent's code on the host) before the snapshot
        before = host_snapshot(lab, h.namespace)
        for r in range(rounds):
            order = (on, off) if r % 2 == 0 else (off, on)  # neither always goes first
            for v in order:
                seen = verify_round(v, agent if v is on else None, direct)
                v.rounds.append(seen)
                print(f"  {v.key} round {r + 1}: {shown(seen)}", flush=True)
                clean(lab, h, before, f"{v.key} round {r + 1}", dirty)
    finally:
        agent.close()
        on.stack.remove()
        off.stack.remove()
    return on, off


def run_ready(
    lab: Lab, h: HostStatus, work: Path, rounds: int, dirty: list[str]
) -> tuple[Variant, Variant]:
    status = lab.status()
    wait = new_variant(work, "ready", stack_config(status, verify=False, ready=True))
    poll = new_variant(work, "poll", stack_config(status, verify=False))
    root = netns_dir(lab, h)
    before = host_snapshot(lab, h.namespace)
    try:
        for r in range(rounds):
            for v in (wait, poll) if r % 2 == 0 else (poll, wait):
                seen = ready_round(v, root)
                v.rounds.append(seen)
                print(f"  {v.key} round {r + 1}: {shown(seen)}", flush=True)
                clean(lab, h, before, f"{v.key} round {r + 1}", dirty)
    finally:
        wait.stack.remove()
        poll.stack.remove()
    return wait, poll


def med(v: Variant, key: str) -> float:
    return statistics.median(s[key] for s in v.rounds)


def verify_report(on: Variant, off: Variant, direct: int) -> list[str]:
    out = [
        f"NAT network on one lab host, 2 test-image guests (TCG), DHCP on; medians of "
        f"{len(on.rounds)} rounds, interleaved; baseline: verify off",
        f"{'':<42}{'verify on':>11}{'verify off':>12}{'on / off':>10}{'on - off':>10}",
    ]
    verbs = (("up", "pulumi up --skip-preview"), ("destroy", "pulumi destroy --skip-preview"))
    for key, name in verbs:
        a, b = med(on, key), med(off, key)
        out.append(f"{name:<42}{a:>10.2f}s{b:>11.2f}s{a / b:>10.2f}{a - b:>+9.2f}s")
    count_on, count_off = med(on, "resources"), med(off, "resources")
    out.append(f"{'kvmnet resources':<42}{count_on:>11.0f}{count_off:>12.0f}")
    check = med(on, "check")
    out.append(
        f"{'NetworkCheck create (state timestamps)':<42}{check:>10.2f}s"
        f"{'':>12}{check / med(on, 'up'):>10.2f}  of up with verify"
    )
    if direct:
        calls = [s[f"direct{k}"] for s in on.rounds for k in range(direct)]
        first, rest = calls[0], calls[1:] or calls
        value = statistics.median(rest)
        out.append(
            f"{'network.verify, open agent session':<42}{value:>10.2f}s{'':>12}"
            f"{value / med(on, 'up'):>10.2f}  of up with verify ({len(rest)} calls; "
            f"the session's first: {first:.2f}s)"
        )
    out += [
        "NetworkCheck create: its `created` in the state minus the latest `created` of what it",
        "depends on (the engine's Check + Create of it, the probe included); network.verify:",
        "the agent call the provider makes, repeated after `up` on a session kept open.",
        f"checks passed per round (verify on): {[int(s['passed']) for s in on.rounds]}",
    ]
    return out


def ready_report(wait: Variant, poll: Variant) -> list[str]:
    done, polled = med(wait, "done"), med(poll, "done")
    return [
        f"Guests' readiness (verify off), from `up` start; medians of {len(wait.rounds)} rounds;"
        " baseline: up without `ready`, then a script polling the consoles every 20 ms",
        f"{'':<46}{'seconds':>9}{'/ baseline':>12}",
        f"{'baseline: up returned':<46}{med(poll, 'up'):>8.2f}s",
        f"{'baseline: both guests READY (polled)':<46}{polled:>8.2f}s{1.0:>12.2f}",
        f"{'ready: {console: READY}: up returned':<46}{done:>8.2f}s{done / polled:>12.2f}",
        f"{'  its guests READY on the console at':<46}{med(wait, 'guests'):>8.2f}s",
        f"{'  up returned after the last READY by':<46}"
        f"{statistics.median(s['up'] - s['guests'] for s in wait.rounds):>8.2f}s",
        "The agent probes a waiting guest every 2 s (guest.probe): the wait overshoots by up to",
        "one period, plus the engine's turn-around.",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="up/destroy rounds per variant")
    parser.add_argument(
        "--direct", type=int, default=2, help="network.verify calls after each verified up"
    )
    parser.add_argument(
        "--ready-rounds", type=int, default=0, help="rounds of ready vs polling (0: skip)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_verify: needs root (the lab)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kvmnet-bench-verify-"))
    begin = time.monotonic()
    dirty: list[str] = []
    print(f"load at start: {load()}", flush=True)
    try:
        with own_lab(work / "lab", prefix="kv") as (lab, h):
            print(f"lab {lab.name}: host {h.address} ({h.namespace})", flush=True)
            on, off = run_verify(lab, h, work, args.rounds, args.direct, dirty)
            print(f"load after verify: {load()}", flush=True)
            ready = run_ready(lab, h, work, args.ready_rounds, dirty) if args.ready_rounds else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("\n".join(verify_report(on, off, args.direct)))
    if ready is not None:
        print()
        print("\n".join(ready_report(*ready)))
    print(f"host clean after every destroy: {'yes' if not dirty else 'NO: ' + ' | '.join(dirty)}")
    print(f"load at end: {load()}   (total {time.monotonic() - begin:.0f} s)")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
