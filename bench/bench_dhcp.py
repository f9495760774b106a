#!/usr/bin/env python3
"""Benchmark: DHCP on a NAT network. (1) From `pulumi up` start to the guest's first DHCP
lease (and to its READY line), against the same guest with a static address (no DHCP) in the
same run; (2) dnsmasq's start cost per network with 1, 10 and 50 declared guests (hosts files
only, no guest booted), against the 1-guest start, plus a SIGHUP reload and an agent ping.

Run as root from the repo root:
    .venv/bin/python bench/bench_dhcp.py [--rounds 2] [--starts 5] [--hosts 1,10,50]

It brings up its own lab (one host, a unique name "kd<hex>") and always takes it down. Not a
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
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from bench_nat import load, own_lab
from kvmnet_lab.hostconfig import host_settings, lab_stack_config
from kvmnet_lab.lab import HostStatus, Lab, LabStatus
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.stack import TestStack
from marks import timed_up

from kvmnet_provider.connection import agent_session

RUN_ROOT = Path(os.environ.get("KVMNET_HOST_STATE", "/run/kvmnet"))
BRIDGE = "br-kd"
MAC = "52:54:00:00:01:01"
READY = b"KVMNET-GUEST-READY"


def program(dhcp: bool) -> str:
    return textwrap.dedent(
        f"""
        import pulumi
        from kvmnet_provider.models import GuestSpec, NatNetwork, NetworkArgs
        from kvmnet_provider.program import connection_from_config, guest_image

        cfg = pulumi.Config("kvmnet")
        kernel, initrd = guest_image(cfg)
        ip = "dhcp" if {dhcp!r} else "10.0.1.11/24 kvmnet.gw=10.0.1.254"
        guest = GuestSpec(name="kdg1", tap="vkd1.0", mac="{MAC}", address="10.0.1.11",
                          kernel=kernel, initrd=initrd, stop_timeout=2,
                          cmdline=f"console=ttyS0 quiet kvmnet.name=kdg1 kvmnet.ip={{ip}}")
        NatNetwork("net", NetworkArgs(connection=connection_from_config(cfg), bridge="{BRIDGE}",
                                      gateway="10.0.1.254", guests=[guest], accelerator="tcg",
                                      dhcp={dhcp!r}))
        """
    )


def netns_dir(lab: Lab, h: HostStatus) -> Path:
    out = lab.exec_in(
        h.namespace,
        ["stat", "-L", "-c", "%i", "/proc/self/ns/net"],
        capture_output=True,
        text=True,
        check=True,
    )
    return RUN_ROOT / f"netns-{out.stdout.strip()}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def watch(root: Path, t0: float, seen: dict[str, float], stop: threading.Event) -> None:
    """Note when the lease file first holds the guest's MAC and the console says READY."""
    lease = root / "dhcp" / BRIDGE / "leases"
    console = root / "guests" / "kdg1" / "console.log"
    while not stop.is_set():
        if "lease" not in seen and MAC.encode() in _read(lease):
            seen["lease"] = time.monotonic() - t0
        if "ready" not in seen and READY in _read(console):
            seen["ready"] = time.monotonic() - t0
        time.sleep(0.02)


def boot_round(stack: TestStack, root: Path, dhcp: bool) -> dict[str, float]:
    return timed_up(
        stack,
        functools.partial(watch, root),
        lambda seen: "ready" in seen and (not dhcp or "lease" in seen),
        180,
        "guest not ready / no lease",
    )


def bench_boot(status: LabStatus, root: Path, work: Path, rounds: int) -> dict[str, list[Any]]:
    results: dict[str, list[Any]] = {"dhcp": [], "static": []}
    for r in range(rounds):
        for key in ("static", "dhcp"):
            stack = TestStack(work / f"boot-{key}", program(key == "dhcp"), project="kdboot")
            stack.config_values(lab_stack_config(status, image_dir=guest_image_dir()))
            try:
                seen = boot_round(stack, root, key == "dhcp")
            finally:
                stack.remove()
            results[key].append(seen)
            print(f"  boot {key} round {r + 1}: {seen}", flush=True)
    return results


def hosts(n: int, tag: int) -> list[dict[str, Any]]:
    # Static leases .1-.n (n <= 100) below the default range (.128-.253).
    return [
        {"name": f"g{k}", "mac": f"52:54:00:{tag:02x}:{k // 256:02x}:{k % 256:02x}",
         "address": f"10.9.0.{k}"}
        for k in range(1, n + 1)
    ]  # fmt: skip


def bench_start(lab: Lab, h: HostStatus, counts: list[int], starts: int) -> dict[str, Any]:
    """dnsmasq's start (and SIGHUP reload) through the agent, per declared guest count."""
    for argv in (
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "addr", "add", "10.9.0.254/24", "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
    ):
        lab.exec_in(h.namespace, argv, check=True)
    agent = agent_session(host_settings(h, sys.executable))
    owner = "kvmnet:bench/dhcp/DhcpServer/kd"
    base = {"owner": owner, "bridge": BRIDGE, "subnet": "10.9.0.0/24", "gateway": "10.9.0.254"}
    out: dict[str, Any] = {"ping": [], "start": {}, "reload": {}}
    try:
        for _ in range(starts):
            t = time.monotonic()
            agent.call("ping", {})
            out["ping"].append(time.monotonic() - t)
        for n in counts:
            out["start"][n], out["reload"][n] = [], []
            for _ in range(starts):
                t = time.monotonic()
                live = agent.call("dhcp.start", {**base, "hosts": hosts(n, 1)})
                out["start"][n].append(time.monotonic() - t)
                assert live["how"] == "started", live
                t = time.monotonic()
                live = agent.call("dhcp.start", {**base, "hosts": hosts(n, 2)})
                out["reload"][n].append(time.monotonic() - t)
                assert live["how"] == "reloaded", live
                agent.call("dhcp.stop", {"bridge": BRIDGE, "owner": owner})
            print(f"  dnsmasq start with {n} guests: {out['start'][n]}", flush=True)
    finally:
        agent.call("dhcp.stop", {"bridge": BRIDGE, "owner": owner})
        lab.exec_in(h.namespace, ["ip", "link", "del", BRIDGE], check=False)
    return out


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def report(boot: dict[str, list[Any]], start: dict[str, Any]) -> str:
    static_ready = statistics.median(s["ready"] for s in boot["static"])
    rows = [
        ("static address (baseline): READY", static_ready),
        (
            "DHCP: first lease in the lease file",
            statistics.median(s["lease"] for s in boot["dhcp"]),
        ),
        ("DHCP: READY (after the lease)", statistics.median(s["ready"] for s in boot["dhcp"])),
        ("static: `pulumi up` returned", statistics.median(s["up"] for s in boot["static"])),
        ("DHCP: `pulumi up` returned", statistics.median(s["up"] for s in boot["dhcp"])),
    ]
    out = [
        f"NAT network, 1 test-image guest under TCG; from `pulumi up` start (median of "
        f"{len(boot['dhcp'])} rounds)",
        f"{'':<40}{'seconds':>9}{'/ baseline':>12}",
    ]
    out += [f"{name:<40}{v:>8.1f}s{v / static_ready:>12.2f}" for name, v in rows]
    one = ms(start["start"][min(start["start"])])
    out += [
        "",
        f"dnsmasq per network through the agent (median of {len(start['ping'])}), baseline: "
        f"the start with {min(start['start'])} declared guest",
        f"{'declared guests':>16}{'start':>10}{'/ baseline':>12}{'SIGHUP reload':>15}"
        f"{'/ baseline':>12}",
    ]
    for n in sorted(start["start"]):
        s, r = ms(start["start"][n]), ms(start["reload"][n])
        out.append(f"{n:>16}{s:>8.1f}ms{s / one:>12.2f}{r:>13.1f}ms{r / one:>12.2f}")
    out.append(f"{'agent ping':>16}{ms(start['ping']):>8.1f}ms{ms(start['ping']) / one:>12.2f}")
    out += [
        "start: dhcp.start from nothing (writes the files, runs dnsmasq, waits for its pidfile);",
        "reload: the same call with other hosts files (rewrite + SIGHUP, no restart).",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="boots per variant")
    parser.add_argument("--starts", type=int, default=5, help="dnsmasq starts per count")
    parser.add_argument("--hosts", default="1,10,50", help="declared guest counts")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_dhcp: needs root (the lab)", file=sys.stderr)
        return 2
    counts = [int(x) for x in args.hosts.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="kvmnet-bench-dhcp-"))
    begin = time.monotonic()
    print(f"load at start: {load()}", flush=True)
    try:
        with own_lab(work / "lab", prefix="kd") as (lab, h):
            print(f"lab {lab.name}: host {h.address} ({h.namespace})", flush=True)
            start = bench_start(lab, h, counts, args.starts)
            boot = bench_boot(lab.status(), netns_dir(lab, h), work, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(report(boot, start))
    print(f"load at end: {load()}   (total {time.monotonic() - begin:.0f} s)")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
