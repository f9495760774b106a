#!/usr/bin/env python3
"""Benchmark: a fleet of lab hosts, each a NAT network of N taps plus G guests, through the
real engine (`pulumi up`/`refresh`/`destroy`) against the do-nothing floor of the same graph,
and the remote cost per change on every host at once against one shell script per host.

Run as root from the repo root:  .venv/bin/python bench/bench_fleet.py [--hosts 1,4,8]
    [--taps 50] [--guests 2] [--rounds 3] [--pulumi-rounds 1] [--parallel 16] [--keep 300]

Each host count gets its own lab ("kbf<hex>"), always taken down. Not a test: nothing is
asserted about wall time; it fails only when a step fails or leaves a host unclean.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet_workload import (
    ProcessCpu,
    per_change,
    program_fleet,
    program_fleet_noop,
    remote_round,
    resource_count,
    session_start,
    settle_guests,
    wait_quiet,
)
from kvmnet_lab.lab import fresh_lab
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.stack import TestStack
from nat_report import fmt, ratio
from nat_workload import CREATED_RE, DELETED_RE, Host, Rounds, _count, change_count

VERBS = ("up", "refresh", "destroy")


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pulumi_round(
    key: str,
    stack: TestStack,
    hosts: list[Host],
    want: int,
    res: Rounds,
    extra: list[str],
    guests: int,
) -> None:
    """up, refresh, destroy of one stack: wall, the engine side's CPU (pulumi, the language
    host, the providers) and the hosts' agents' CPU."""
    statuses = [h.status for h in hosts]
    for verb in VERBS:
        argv = [verb, "--yes", "--skip-preview", *(extra if verb != "refresh" else [])]
        namespaces = [h.namespace for h in statuses]
        with ProcessCpu(namespaces, b"kvmnet_agent") as agents:
            with ProcessCpu(namespaces, b"qemu-system") as qemu:
                engine, t = children_cpu(), time.perf_counter()
                out = stack.pulumi(*argv).stdout
                res.add(f"{key}.{verb}", time.perf_counter() - t)
                wait_quiet()
        res.add(f"{key}.{verb}.engine_cpu", children_cpu() - engine)
        res.add(f"{key}.{verb}.host_cpu", agents.seconds)
        res.add(f"{key}.{verb}.qemu_cpu", qemu.seconds)
        if verb == "up":
            res.add(f"{key}.settle", settle_guests(namespaces, guests))
        if verb == "up" and _count(CREATED_RE, out) != want:
            raise RuntimeError(f"{key}: up did not create {want}:\n{out[-800:]}")
        if verb == "destroy" and _count(DELETED_RE, out) != want:
            raise RuntimeError(f"{key}: destroy did not delete {want}:\n{out[-800:]}")
        if verb == "refresh" and ("deleted" in out or "updated" in out):
            raise RuntimeError(f"{key}: refresh found drift:\n{out[-800:]}")
        print(f"    {key} {verb}: {res.samples[f'{key}.{verb}'][-1]:.1f} s", flush=True)
    for h in hosts:
        h.require_clean(f"pulumi destroy ({key})")


def bench_hosts(count: int, args: argparse.Namespace, work: Path) -> Rounds:
    res = Rounds()
    with fresh_lab("kbf", hosts=count, base=work / f"lab{count}") as (lab, status):
        hosts = [Host(lab, h) for h in status.hosts]
        for h in hosts:
            h.require_clean("lab up")
        print(f"[{count} hosts] lab {lab.name} up; load {load()}", flush=True)
        session_start(hosts[0], res)
        for r in range(args.rounds):
            remote_round(hosts, args.taps, res)
            print(f"  remote round {r + 1} done", flush=True)
        want = resource_count(count, args.taps, args.guests) + 1  # and the stack
        root = work / f"pulumi-{count}"
        stacks = {
            "kvmnet": TestStack(
                root / "k",
                program_fleet(status.hosts, args.taps, args.guests, guest_image_dir()),
                project="kbfk",
            ),
            "floor": TestStack(
                root / "f", program_fleet_noop(count, args.taps, args.guests), project="kbff"
            ),
        }
        try:
            for _ in range(0 if args.no_pulumi else args.pulumi_rounds):
                for key, stack in stacks.items():
                    pulumi_round(
                        key, stack, hosts, want, res, [], args.guests if key == "kvmnet" else 0
                    )
            if args.keep and not args.no_pulumi:
                stacks["kvmnet"].config("kvmnet:keepSessions", str(args.keep))
                for _ in range(args.pulumi_rounds):  # up starts the keepers; the rest ask them
                    pulumi_round("kept", stacks["kvmnet"], hosts, want, res, [], args.guests)
            if args.parallel and not args.no_pulumi and count == max(args.host_counts):
                pulumi_round(
                    f"kvmnet.p{args.parallel}", stacks["kvmnet"], hosts, want, res,
                    ["--parallel", str(args.parallel)], args.guests,
                )  # fmt: skip
        finally:
            for stack in stacks.values():
                stack.remove()
        print(f"[{count} hosts] done; load {load()}", flush=True)
    return res


def report(args: argparse.Namespace, results: dict[int, Rounds]) -> str:
    ch = change_count(args.taps)
    first = results[min(results)]
    out = [
        f"== fleet: per host a NAT network of {args.taps} taps + {args.guests} guests "
        f"({resource_count(1, args.taps, args.guests)} resources); medians, seconds ==",
        f"{'hosts':>5} {'verb':<8}{'kvmnet':>8}{'floor':>8}{'ratio':>7}{'ms/res':>8}"
        f"{'vs 1 host':>10}{'engine CPU':>11}{'(floor)':>8}{'agent CPU':>10}{'QEMU CPU':>9}",
    ]
    for count, res in sorted(results.items()):
        n_res = resource_count(count, args.taps, args.guests)
        for verb in VERBS:
            k, f = res.med(f"kvmnet.{verb}"), res.med(f"floor.{verb}")
            k1 = first.med(f"kvmnet.{verb}")
            per, per1 = (
                (None if k is None else k / n_res),
                (None if k1 is None else k1 / resource_count(min(results), args.taps, args.guests)),
            )
            out.append(
                f"{count:>5} {verb:<8}{fmt(k, 1, 1):>8}{fmt(f, 1, 1):>8}{ratio(k, f):>7}"
                f"{fmt(per, 1000, 1):>8}{ratio(per, per1):>10}"
                f"{fmt(res.med(f'kvmnet.{verb}.engine_cpu'), 1, 1):>11}"
                f"{fmt(res.med(f'floor.{verb}.engine_cpu'), 1, 1):>8}"
                f"{fmt(res.med(f'kvmnet.{verb}.host_cpu'), 1, 2):>10}"
                f"{fmt(res.med(f'kvmnet.{verb}.qemu_cpu'), 1, 1):>9}"
            )
    out.append(
        "  ms/res: kvmnet wall per resource; 'vs 1 host': that against the 1-host figure.\n"
        "  engine CPU: pulumi, language host and providers (this process's children);\n"
        "  agent CPU: every host's agents, sampled from /proc; QEMU CPU: the guests' QEMUs.\n"
        "  After up, the guests are left to boot (QEMU under a tenth of a core each) before\n"
        "  refresh: waited "
        + ", ".join(
            f"{c} hosts {fmt(r.med('kvmnet.settle'), 1, 0)} s" for c, r in sorted(results.items())
        )
    )
    if args.keep:
        out.append(f"with kvmnet:keepSessions={args.keep} (up starts each host's keeper):")
        for count, res in sorted(results.items()):
            out.append(
                f"  {count} hosts: "
                + "; ".join(
                    f"{verb} {fmt(res.med('kept.' + verb), 1, 1)} s "
                    f"(floor {ratio(res.med('kept.' + verb), res.med('floor.' + verb))}, "
                    f"without {ratio(res.med('kept.' + verb), res.med('kvmnet.' + verb))})"
                    for verb in VERBS
                )
            )
    for count, res in sorted(results.items()):
        for key in sorted(k for k in res.samples if k.startswith("kvmnet.p") and k.count(".") == 2):
            if key.endswith(("up", "destroy")):
                verb = key.rsplit(".", 1)[1]
                default = fmt(res.med("kvmnet." + verb), 1, 1)
                out.append(
                    f"  --parallel {key.split('.')[1][1:]} at {count} hosts: {verb} "
                    f"{fmt(res.med(key), 1, 1)} s (default: {default} s)"
                )
    out.append(
        f"remote cost per change, every host at once ({ch} changes per host; medians over "
        "hosts and rounds)"
    )
    out.append(
        f"{'hosts':>5}{'agent ms/change':>17}{'agent CPU ms':>14}{'script ms/change':>18}"
        f"{'ratio':>7}{'vs 1 host':>11}{'kernel ms':>11}{'vs 1 host':>11}"
        f"{'fleet agent':>13}{'fleet script':>14}{'fleet kernel':>14}"
    )
    base = per_change(first, "kvmnet.changes", args.taps)
    kernel_base = per_change(first, "kernel.changes", args.taps)
    for count, res in sorted(results.items()):
        k, s, kern = (
            per_change(res, "kvmnet.changes", args.taps),
            per_change(res, "script.changes", args.taps),
            per_change(res, "kernel.changes", args.taps),
        )
        cpu = per_change(res, "kvmnet.cpu", args.taps)
        out.append(
            f"{count:>5}{fmt(k, 1000, 2):>17}{fmt(cpu, 1000, 2):>14}{fmt(s, 1000, 2):>18}"
            f"{ratio(k, s):>7}{ratio(k, base):>11}{fmt(kern, 1000, 2):>11}"
            f"{ratio(kern, kernel_base):>11}"
            f"{fmt(per_change(res, 'kvmnet.fleet', args.taps), 1000, 2):>13}"
            f"{fmt(per_change(res, 'script.fleet', args.taps), 1000, 2):>14}"
            f"{fmt(per_change(res, 'kernel.fleet', args.taps), 1000, 2):>14}"
        )
    out.append(
        "  per host: each host's own changes' time; fleet: a round's wall time divided by all\n"
        "  hosts' changes (ms per change of the whole fleet, each method on every host at once).\n"
        "  kernel: the same changes made inside the host's namespace by one shell, its `ip`\n"
        "  commands as one `ip -batch` per phase (no SSH, next to no CPU): the kernel's own time.\n"
        "  The lab's hosts are namespaces of one kernel, whose link changes all take one lock\n"
        "  (RTNL; a link delete holds it through an RCU grace period): what the kernel figure\n"
        "  loses from 1 host to N no client can win back here; separate hosts do not share it."
    )
    for count, res in sorted(results.items()):
        kc, kd = res.med("kernel.create"), res.med("kernel.delete")
        if kc is not None and kd is not None:
            out.append(
                f"  kernel at {count} hosts: create {fmt(kc / (5 + 2 * args.taps), 1000, 2)} ms, "
                f"delete {fmt(kd / (3 + args.taps), 1000, 2)} ms per change"
            )
    first_start = results[min(results)]
    out.append(
        "session start on one host, nothing else running (medians): SSH handshake "
        f"{fmt(first_start.med('start.ssh'), 1000, 0)} ms; a command of nothing on it (sshd and "
        f"the user's shell) {fmt(first_start.med('start.shell'), 1000, 0)} ms; AgentSession to "
        f"the agent's hello {fmt(first_start.med('start.session'), 1000, 0)} ms, agent CPU "
        f"{fmt(first_start.med('start.agent_cpu'), 1000, 0)} ms"
    )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hosts", default="1,4,8", help="host counts, comma separated")
    parser.add_argument("--taps", type=int, default=50, help="taps per host (no guests)")
    parser.add_argument("--guests", type=int, default=2, help="guests per host")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the remote-cost runs")
    parser.add_argument("--pulumi-rounds", type=int, default=1, help="rounds of up/refresh/destroy")
    parser.add_argument("--no-pulumi", action="store_true", help="only the remote-cost runs")
    parser.add_argument(
        "--keep", type=int, default=0, help="also run with kvmnet:keepSessions=KEEP seconds"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=0,
        help="also run up/destroy with --parallel P at the most hosts",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_fleet: needs root (the lab)", file=sys.stderr)
        return 2
    args.host_counts = [int(x) for x in args.hosts.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="kvmnet-bench-fleet-"))
    start = time.monotonic()
    print(f"load at start: {load()}", flush=True)
    results: dict[int, Rounds] = {}
    try:
        for count in args.host_counts:
            results[count] = bench_hosts(count, args, work)
            print(report(args, results) + "\n", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load at end: {load()}   (total {time.monotonic() - start:.0f} s)")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
