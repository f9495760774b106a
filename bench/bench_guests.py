#!/usr/bin/env python3
"""Benchmark: `pulumi destroy` of N guests on one host whose ACPI power-down is ignored,
against the same graph of do-nothing resources and against the sum of the stop waits.

Run as root from the repo root:
    .venv/bin/python bench/bench_guests.py [--guests 4,12,24] [--stop-timeout 3] [--rounds 1]
                                           [--parallel P]

It brings up its own lab (one host, a unique name "kg<hex>") and always takes it down. Not a
test: it asserts nothing about wall time; it fails only when a step fails or a QEMU outlives
its destroy. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_nat import load, own_lab
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import HostStatus, Lab
from kvmnet_lab.testing.stack import TestStack
from kvmnet_lab.toolchain import pulumi_bin_dir

MEMORY_MIB = 64
# The guest: a 512-byte boot sector that halts the CPU (cli; hlt; jmp back to hlt). It has no
# ACPI support, so it ignores the power-down like a guest that takes its time, and it idles:
# 24 guests cost the shared cores nothing while the destroy is timed.
BOOT_SECTOR = bytes([0xFA, 0xF4, 0xEB, 0xFD]) + bytes(506) + b"\x55\xaa"


def program_kvmnet(h: HostStatus, n: int, disks: Path, stop_timeout: int) -> str:
    conn = host_settings(h, sys.executable).to_props()
    return textwrap.dedent(
        f"""
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources.guest import QemuGuest, QemuGuestArgs

        conn = HostSettings(**{conn!r})
        for k in range({n}):
            disk = {{"path": f"{disks}/halt-{{k}}.img", "format": "raw", "interface": "ide"}}
            QemuGuest(
                f"g{{k}}",
                QemuGuestArgs(
                    connection=conn,
                    name=f"kbg{{k}}",
                    memory_mib={MEMORY_MIB},
                    disks=[disk],
                    accelerator="tcg",
                    stop_timeout={stop_timeout},
                ),
            )
        """
    )


def program_noop(n: int) -> str:
    return textwrap.dedent(
        f"""
        from kvmnet_lab.testing.roundtrip import Noop

        for k in range({n}):
            Noop(f"g{{k}}", message=f"kbg{{k}}")
        """
    )


@dataclass
class Row:
    n: int
    kvmnet: list[float] = field(default_factory=list)
    noop: list[float] = field(default_factory=list)
    spans: list[int] = field(default_factory=list)  # engine: first delete start to last end


def qemus(lab: Lab, h: HostStatus) -> list[str]:
    out = lab.exec_in(
        h.namespace,
        ["ip", "netns", "pids", h.namespace],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    found = []
    for pid in out.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu" in argv[0]:
            found.append(pid)
    return found


def engine_deletions(events: str) -> list[tuple[str, str, int]]:
    """(kind, type, timestamp) of each dynamic resource's delete events in `pulumi destroy
    --json` output (not the stack's nor the provider's): the engine's own timing, whole s."""
    found = []
    for line in events.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        for kind in ("resourcePreEvent", "resOutputsEvent"):
            meta = (event.get(kind) or {}).get("metadata") or {}
            if meta.get("op") == "delete" and str(meta.get("type")).startswith("pulumi-python:"):
                found.append((kind, str(meta.get("type")), int(event["timestamp"])))
    return found


def destroy(stack: TestStack, n: int, parallel: int | None) -> tuple[float, int]:
    """Wall time of the destroy, and the engine's span from its first delete to its last."""
    extra = ["--parallel", str(parallel)] if parallel else []
    t = time.monotonic()
    down = stack.pulumi("destroy", "--yes", "--skip-preview", "--json", *extra)
    took = time.monotonic() - t
    deletions = engine_deletions(down.stdout)
    done = [ts for kind, _, ts in deletions if kind == "resOutputsEvent"]
    if len(done) != n:
        raise RuntimeError(f"destroy deleted {len(done)}, not {n}:\n{down.stdout[-800:]}")
    starts = [ts for kind, _, ts in deletions if kind == "resourcePreEvent"]
    return took, max(done) - min(starts)


def bench_one(
    lab: Lab, h: HostStatus, n: int, args: argparse.Namespace, work: Path, disks: Path
) -> Row:
    row = Row(n)
    root = work / f"pulumi-{n}"
    stacks = {
        "kvmnet": TestStack(
            root / "kvmnet", program_kvmnet(h, n, disks, args.stop_timeout), project="kgkvmnet"
        ),
        "noop": TestStack(root / "noop", program_noop(n), project="kgnoop"),
    }
    try:
        for r in range(args.rounds):
            for key, stack in stacks.items():
                stack.up()
                if key == "kvmnet" and len(qemus(lab, h)) != n:
                    raise RuntimeError(f"{n} guests asked for, {len(qemus(lab, h))} running")
                took, span = destroy(stack, n, args.parallel)
                if key == "kvmnet":
                    row.kvmnet.append(took)
                    row.spans.append(span)
                    if qemus(lab, h):
                        raise RuntimeError(f"QEMU outlived the destroy: {qemus(lab, h)}")
                else:
                    row.noop.append(took)
                print(f"  [{n} guests] {key} round {r + 1}: destroy {took:.1f} s", flush=True)
    finally:
        for stack in stacks.values():
            stack.remove()
    return row


def provider_workers() -> int:
    """How many operations kvmnet's resources are served at once: the Python dynamic
    provider's gRPC pool, as kvmnet widens it (kvmnet_provider/serverpool.py)."""
    import pulumi.dynamic

    from kvmnet_provider import serverpool

    # read, not imported: importing that module starts the provider's server
    source = (Path(pulumi.dynamic.__file__).parent / "__main__.py").read_text()
    found = re.search(r"max_workers\s*=\s*(\d+)", source)
    sdk = int(found.group(1)) if found else 0
    return serverpool.WORKERS if sdk == serverpool.SDK_WORKERS else sdk


def engine_parallel() -> int:
    """The engine's default `--parallel` on this machine, as `pulumi destroy --help` says."""
    helptext = subprocess.run(
        [str(pulumi_bin_dir() / "pulumi"), "destroy", "--help"], capture_output=True, text=True
    ).stdout
    found = re.search(r"--parallel int32.*\(default (\d+)\)", helptext)
    return int(found.group(1)) if found else 0


def report(rows: list[Row], stop_timeout: int, parallel: int | None, workers: int) -> str:
    parallel = parallel or engine_parallel() or None
    effective = min(p for p in (parallel, workers) if p) if (parallel or workers) else 0
    out = [
        f"pulumi destroy of N guests ignoring ACPI power-down, stop_timeout {stop_timeout} s, "
        f"--parallel {parallel or '?'}; the dynamic provider serves {workers or '?'} "
        f"operations at once (waves of {effective or '?'})",
        f"{'N':>4}{'kvmnet':>9}{'noop':>8}{'k/noop':>8}{'one at a time':>15}{'k/that':>8}"
        f"{'in waves':>10}{'k/that':>8}{'engine span':>13}",
    ]
    for row in rows:
        k, z = statistics.median(row.kvmnet), statistics.median(row.noop)
        serial = z + row.n * stop_timeout
        waves = z + math.ceil(row.n / effective) * stop_timeout if effective else float("nan")
        out.append(
            f"{row.n:>4}{k:>8.1f}s{z:>7.1f}s{k / z:>8.1f}{serial:>14.1f}s{k / serial:>8.2f}"
            f"{waves:>9.1f}s{k / waves:>8.2f}{statistics.median(row.spans):>12}s"
        )
    out += [
        "kvmnet, noop: median destroy wall time of the N guests, of N do-nothing resources.",
        "one at a time: noop + N * stop_timeout, the floor when every stop waits for the one",
        "before (the sum of the stop waits); in waves: noop + ceil(N / waves) * stop_timeout,",
        "the floor with stops side by side. engine span: first guest delete start to last end,",
        "from the engine's own events (whole seconds).",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guests", default="4,12,24", help="guest counts, comma separated")
    parser.add_argument("--stop-timeout", type=int, default=3, help="each guest's stop_timeout")
    parser.add_argument("--rounds", type=int, default=1, help="destroys per count and stack")
    parser.add_argument("--parallel", type=int, help="pulumi destroy --parallel")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_guests: needs root (the lab)", file=sys.stderr)
        return 2
    counts = [int(x) for x in args.guests.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="kvmnet-bench-guests-"))
    disks = work / "disks"  # one per guest: QEMU locks its image for writing
    disks.mkdir()
    for k in range(max(counts)):
        (disks / f"halt-{k}.img").write_bytes(BOOT_SECTOR)
    rows: list[Row] = []
    start = time.monotonic()
    print(f"load at start: {load()}", flush=True)
    try:
        with own_lab(work / "lab", prefix="kg") as (lab, h):
            print(f"lab {lab.name}: host {h.address} ({h.namespace})", flush=True)
            for n in counts:
                rows.append(bench_one(lab, h, n, args, work, disks))
                print(f"  (load: {load()})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(report(rows, args.stop_timeout, args.parallel, provider_workers()))
    print(f"load at end: {load()}   (total {time.monotonic() - start:.0f} s)")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
