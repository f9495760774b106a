#!/usr/bin/env python3
"""Benchmark: kvmnet's remote time per kernel change for a NAT-model network, against shell
baselines, and `pulumi up`/`destroy` of kvmnet's resources against do-nothing resources.

Run as root from the repo root:  .venv/bin/python bench/bench_nat.py [--rounds 5] [--taps 2,100]

It brings up its own lab (one KVM host, a unique name "kb<hex>") and always takes it down.
Not a test: it asserts nothing about wall time; it fails only when a round leaves the host
unclean or a step fails. See bench/README.md for what is measured and how changes are counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kvmnet_lab.lab import HostStatus, Lab, fresh_lab
from kvmnet_lab.testing.stack import TestStack
from nat_baselines import program_noop, run_conn_per_command, run_script
from nat_report import report
from nat_workload import (
    ENGINE_PARALLEL,
    Host,
    Rounds,
    inproc_main,
    program_kvmnet,
    run_inproc,
    run_kvmnet,
    run_pulumi,
)


# --- driver --------------------------------------------------------------------------------
@contextmanager
def own_lab(base: Path, prefix: str = "kb") -> Iterator[tuple[Lab, HostStatus]]:
    """A one-host lab of the bench's own (`<prefix><hex>`), always taken down."""
    with fresh_lab(prefix, hosts=1, base=base) as (lab, status):
        host = status.hosts[0]
        if not host.ssh_reachable:
            raise RuntimeError(f"lab {lab.name}: SSH does not reach {host.address}")
        yield lab, host


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the fast methods")
    parser.add_argument(
        "--slow-rounds", type=int, default=3, help="rounds of connection-per-command and pulumi"
    )
    parser.add_argument("--taps", default="2,100", help="tap counts, comma separated")
    parser.add_argument("--no-pulumi", action="store_true", help="skip the pulumi comparison")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile listing")
    parser.add_argument("--inproc", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inproc is not None:
        inproc_main(args.inproc, args.profile)
        return 0
    if os.geteuid() != 0:
        print("bench_nat: needs root (the lab)", file=sys.stderr)
        return 2
    counts = [int(x) for x in args.taps.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="kvmnet-bench-"))
    reports: list[str] = []
    start = time.monotonic()
    print(f"load at start: {load()}", flush=True)
    try:
        with own_lab(work / "lab") as (lab, h):
            host = Host(lab, h)
            host.require_clean("lab up")
            print(f"lab {lab.name}: host {h.address} ({h.namespace})", flush=True)
            for n in counts:
                reports.append(bench_one(host, h, n, args, work))
                print(reports[-1] + "\n", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load at end: {load()}   (total {time.monotonic() - start:.0f} s)")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    return 0


def bench_one(host: Host, h: HostStatus, n: int, args: argparse.Namespace, work: Path) -> str:
    res = Rounds()
    per_op: dict[str, list[float]] = {}

    def step(label: str, fn: Callable[[], None]) -> None:
        t = time.monotonic()
        fn()
        print(f"  [{n} taps] {label}: {time.monotonic() - t:.1f} s", flush=True)

    for r in range(args.rounds):  # interleaved so that load drifts hit both alike
        step(f"kvmnet round {r + 1}", lambda: run_kvmnet(host, n, res, per_op))
        step(
            f"kvmnet (deletes {ENGINE_PARALLEL} at once) round {r + 1}",
            lambda: run_kvmnet(host, n, res, per_op, ENGINE_PARALLEL),
        )
        step(f"script round {r + 1}", lambda: run_script(host, n, res))
    inproc_ops: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        run_inproc(host, n, res, inproc_ops, False)
    profile = "" if args.no_profile else run_inproc(host, n, res, inproc_ops, True)
    print(f"  [{n} taps] in-process rounds done", flush=True)
    for op, values in inproc_ops.items():
        per_op["inproc:" + op] = values
    for r in range(args.slow_rounds):
        step(f"connection-per-command round {r + 1}", lambda: run_conn_per_command(host, n, res))
    if not args.no_pulumi:
        root = work / f"pulumi-{n}"
        stacks = {
            "kvmnet": TestStack(root / "kvmnet", program_kvmnet(h, n), project="kbkvmnet"),
            "noop": TestStack(root / "noop", program_noop(n), project="kbnoop"),
        }
        try:
            for r in range(args.slow_rounds):
                for key, stack in stacks.items():
                    step(
                        f"pulumi {key} round {r + 1}",
                        lambda key=key, stack=stack: run_pulumi(  # type: ignore[misc]
                            stack, f"pulumi.{key}", n, res, host if key == "kvmnet" else None
                        ),
                    )
        finally:
            for stack in stacks.values():
                stack.remove()
            host.require_clean("the pulumi stacks were removed")
    return report(n, res, per_op, profile) + f"\n(load when done: {load()})"


if __name__ == "__main__":
    sys.exit(main())
