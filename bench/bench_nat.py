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
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from kvmnet_provider.connection.session import AgentSession
from kvmnet_provider.connection.settings import HostSettings
from kvmnet_provider.lab import HostStatus, Lab, fresh_lab, open_client
from kvmnet_provider.testing.stack import TestStack

REPO = Path(__file__).resolve().parent.parent
BRIDGE = "br-in"
BRIDGE_ADDR = "10.0.1.254/24"
NAT_NET = "10.0.1.0/24"
SHELL_MARK = "kvmnet-bench-shell"
LEGACY = "iptables"  # the firewall backend the script's iptables-legacy commands compare with
OWNER = "bench/nat"  # owner prefix of the direct agent calls (the ifalias/comment on the host)
Op = tuple[str, dict[str, Any]]


# --- the network and how its changes are counted -------------------------------------------
def taps(n: int) -> list[str]:
    return [f"vif{k}.0" for k in range(1, n + 1)]


def change_count(n: int) -> int:
    """Kernel changes of one build + teardown, the lab-notes' count (14 for 2 taps).

    Build: bridge add, address, bridge up, ip_forward on, MASQUERADE rule (5), then per tap:
    tap add, attach to the bridge + up (2 each). Teardown: rule delete, ip_forward restore,
    each tap delete, bridge delete (3 + N). Total 8 + 3N. Every method is charged this count.
    """
    return 8 + 3 * n


def read_count(n: int) -> int:
    """Reads: the bridge, each tap, ip_forward, the NAT chain."""
    return n + 3


def kvmnet_ops(n: int) -> dict[str, list[Op]]:
    """The agent calls of one round, by phase (what the four resource kinds send)."""
    bridge: dict[str, Any] = {
        "name": BRIDGE,
        "owner": f"{OWNER}/Bridge/br",
        "addresses": [BRIDGE_ADDR],
        "mtu": None,
        "stp": False,
        "forward_delay": 0,
        "up": True,
        "adopt": False,
    }
    fwd_owner, nat_owner = f"{OWNER}/ForwardingSetting/fwd", f"{OWNER}/MasqueradeRule/nat"

    def tap_spec(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "owner": f"{OWNER}/TapPort/{name}",
            "bridge": BRIDGE,
            "owner_user": None,
            "multi_queue": False,
            "mtu": None,
            "up": True,
            "adopt": False,
        }

    create: list[Op] = [
        ("bridge.create", bridge),
        ("forwarding.acquire", {"owner": fwd_owner, "ipv4": True, "ipv6": False}),
        (
            "masquerade.ensure",
            {"owner": nat_owner, "source": NAT_NET, "out_interface": None, "backend": LEGACY},
        ),
    ] + [("tap.create", tap_spec(t)) for t in taps(n)]
    read: list[Op] = (
        [("link.read", {"name": BRIDGE})]
        + [("link.read", {"name": t}) for t in taps(n)]
        + [
            ("forwarding.read", {"owner": fwd_owner}),
            ("masquerade.read", {"owner": nat_owner, "backend": LEGACY}),
        ]
    )
    delete: list[Op] = (
        [
            ("masquerade.remove", {"owner": nat_owner, "backend": LEGACY}),
            ("forwarding.release", {"owner": fwd_owner}),
        ]
        + [("link.delete", {"name": t, "owner": f"{OWNER}/TapPort/{t}"}) for t in taps(n)]
        + [("link.delete", {"name": BRIDGE, "owner": bridge["owner"]})]
    )
    return {"create": create, "read": read, "delete": delete}


def shell_commands(n: int, forward_before: str) -> dict[str, list[str]]:
    """The same changes as the tutorial's commands (iptables-legacy: the backend kvmnet uses)."""
    rule = f"-s {NAT_NET} ! -d {NAT_NET} -m comment --comment {SHELL_MARK} -j MASQUERADE"
    create = [
        f"ip link add {BRIDGE} type bridge stp_state 0 forward_delay 0",
        f"ip addr add {BRIDGE_ADDR} dev {BRIDGE}",
        f"ip link set {BRIDGE} up",
        "sysctl -qw net.ipv4.ip_forward=1",
        f"iptables-legacy -t nat -A POSTROUTING {rule}",
    ]
    for t in taps(n):
        create += [
            f"ip tuntap add dev {t} mode tap vnet_hdr",
            f"ip link set {t} master {BRIDGE} up",
        ]
    read = (
        [f"ip -d -j addr show dev {BRIDGE}"]
        + [f"ip -d -j link show dev {t}" for t in taps(n)]
        + ["sysctl -n net.ipv4.ip_forward", "iptables-legacy -t nat -S POSTROUTING"]
    )
    delete = [
        f"iptables-legacy -t nat -D POSTROUTING {rule}",
        f"sysctl -qw net.ipv4.ip_forward={forward_before}",
    ]
    delete += [f"ip link del {t}" for t in taps(n)] + [f"ip link del {BRIDGE}"]
    assert len(create) + len(delete) == change_count(n)
    assert len(read) == read_count(n)
    return {"create": create, "read": read, "delete": delete}


# --- results -------------------------------------------------------------------------------
@dataclass
class Rounds:
    """Per-round samples (seconds) of named quantities."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    def med(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None

    def count(self, key: str) -> int:
        return len(self.samples.get(key, []))


def _now() -> float:
    return time.perf_counter()


# --- the host: cleanliness ---------------------------------------------------------------
class Host:
    def __init__(self, lab: Lab, status: HostStatus) -> None:
        self.lab, self.status = lab, status
        self.forward_before = self.sh(["sysctl", "-n", "net.ipv4.ip_forward"]).strip()

    def sh(self, argv: list[str]) -> str:
        proc = self.lab.exec_in(
            self.status.name, argv, capture_output=True, text=True, check=True, timeout=60
        )
        return str(proc.stdout)

    def problems(self) -> list[str]:
        found = []
        links = json.loads(self.sh(["ip", "-j", "link", "show"]) or "[]")
        ours = [
            x["ifname"] for x in links if x["ifname"] == BRIDGE or x["ifname"].startswith("vif")
        ]
        if ours:
            found.append(f"links left: {ours[:5]}{'...' if len(ours) > 5 else ''}")
        nat = self.sh(["iptables-legacy", "-t", "nat", "-S", "POSTROUTING"])
        if "MASQUERADE" in nat:
            found.append("a MASQUERADE rule is left in nat POSTROUTING")
        forward = self.sh(["sysctl", "-n", "net.ipv4.ip_forward"]).strip()
        if forward != self.forward_before:
            found.append(f"ip_forward is {forward}, was {self.forward_before}")
        return found

    def require_clean(self, after: str) -> None:
        found = self.problems()
        if found:
            raise RuntimeError(f"host not clean after {after}: {'; '.join(found)}")

    def bridge_ports(self) -> int:
        return len(json.loads(self.sh(["ip", "-j", "link", "show", "master", BRIDGE]) or "[]"))


def settings_for(h: HostStatus) -> HostSettings:
    return HostSettings.for_lab_host(h, sys.executable)


# --- method 1: kvmnet agent over one open session ----------------------------------------
ENGINE_PARALLEL = 4  # the dynamic provider serves up to four operations at once


def run_kvmnet(
    host: Host, n: int, res: Rounds, per_op: dict[str, list[float]], parallel: int = 1
) -> None:
    """One round of agent calls. parallel > 1: the taps are deleted by that many threads at
    once through the provider's batching path, as `pulumi destroy` does (row "kvmnet4")."""
    key = "kvmnet" if parallel == 1 else "kvmnet4"
    t = _now()
    session = AgentSession(settings_for(host.status))
    res.add(f"{key}.setup", _now() - t)
    try:
        pings = []
        for _ in range(20):
            t = _now()
            session.call("ping", {})
            pings.append(_now() - t)
        res.add(f"{key}.ping", statistics.median(pings))
        for phase, ops in kvmnet_ops(n).items():
            t0 = _now()
            if phase == "delete" and parallel > 1:
                run_teardown_in_parallel(session, ops, parallel)
            else:
                for op, args in ops:
                    t = _now()
                    session.call(op, args)
                    if parallel == 1:
                        per_op.setdefault(op, []).append(_now() - t)
            res.add(f"{key}.{phase}", _now() - t0)
            if phase == "create" and host.bridge_ports() != n:
                raise RuntimeError("kvmnet: the bridge does not have all its taps")
        res.add(
            f"{key}.changes", res.samples[f"{key}.create"][-1] + res.samples[f"{key}.delete"][-1]
        )
    finally:
        session.close()
    host.require_clean("a kvmnet round")


def run_teardown_in_parallel(session: AgentSession, ops: list[Op], parallel: int) -> None:
    """The rule and forwarding first, then the taps from `parallel` threads, then the bridge
    (it depends on them): the order and concurrency of `pulumi destroy`."""
    links = [a for op, a in ops if op == "link.delete"]
    for op, args in ops:
        if op != "link.delete":
            session.call(op, args)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(lambda a: session.call_batched("link.delete", a), links[:-1]))
    session.call_batched("link.delete", links[-1])  # the bridge, last in kvmnet_ops


# --- method 2: one script over one exec channel of an open connection --------------------
def script_text(n: int, forward_before: str) -> str:
    cmds = shell_commands(n, forward_before)
    lines = ["set -e", 'echo "T0 $EPOCHREALTIME"']
    lines += cmds["create"] + ['echo "T1 $EPOCHREALTIME"']
    lines += [f"{c} >/dev/null" for c in cmds["read"]] + ['echo "T2 $EPOCHREALTIME"']
    lines += cmds["delete"] + ['echo "T3 $EPOCHREALTIME"']
    return "\n".join(lines) + "\n"


def exec_once(client: paramiko.SSHClient, command: str, stdin: str = "") -> str:
    chan_in, out, err = client.exec_command(command, timeout=120)
    if stdin:
        chan_in.write(stdin)
        chan_in.flush()
    chan_in.channel.shutdown_write()
    text = out.read().decode()
    status = out.channel.recv_exit_status()
    if status != 0:
        raise RuntimeError(f"{command!r} failed ({status}): {err.read().decode()[-400:]}")
    return text


def run_script(host: Host, n: int, res: Rounds) -> None:
    h = host.status
    t = _now()
    client = open_client(h.address, h.port, h.user, h.private_key, h.known_hosts, timeout=10)
    res.add("script.connect", _now() - t)
    try:
        exec_once(client, "true")  # warm: the connection is used once before timing
        script = script_text(n, host.forward_before)
        t = _now()
        out = exec_once(client, "bash -s", script)
        wall = _now() - t
    finally:
        client.close()
    marks = {k: float(v) for k, v in (line.split() for line in out.split("\n") if line)}
    read = marks["T2"] - marks["T1"]
    res.add("script.create", marks["T1"] - marks["T0"])
    res.add("script.read", read)
    res.add("script.delete", marks["T3"] - marks["T2"])
    res.add("script.session", wall - (marks["T3"] - marks["T0"]))  # channel open, bash start
    res.add("script.changes", wall - read)  # the whole exec minus the read phase
    res.add("script.total", wall)
    host.require_clean("a one-session script round")


# --- method 3: a new SSH connection per command ------------------------------------------
def run_conn_per_command(host: Host, n: int, res: Rounds) -> None:
    h = host.status
    cmds = shell_commands(n, host.forward_before)
    for phase in ("create", "delete"):
        t = _now()
        for command in cmds[phase]:
            client = open_client(h.address, h.port, h.user, h.private_key, h.known_hosts, 10)
            try:
                exec_once(client, command)
            finally:
                client.close()
        res.add(f"conn.{phase}", _now() - t)
    res.add("conn.changes", res.samples["conn.create"][-1] + res.samples["conn.delete"][-1])
    host.require_clean("a connection-per-command round")


# --- method 4: pulumi up / destroy, kvmnet resources vs Noop -----------------------------
def program_kvmnet(h: HostStatus, n: int) -> str:
    conn = settings_for(h).to_props()
    return textwrap.dedent(
        f"""
        import pulumi
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources import (
            Bridge, BridgeArgs, ForwardingSetting, ForwardingSettingArgs,
            MasqueradeRule, MasqueradeRuleArgs, TapPort, TapPortArgs,
        )

        conn = HostSettings(**{conn!r})
        br = Bridge("br", BridgeArgs(conn, {BRIDGE!r}, addresses=[{BRIDGE_ADDR!r}]))
        fwd = ForwardingSetting("fwd", ForwardingSettingArgs(conn))
        nat = MasqueradeRule(
            "nat", MasqueradeRuleArgs(conn, {NAT_NET!r}), pulumi.ResourceOptions(depends_on=[br])
        )
        for k in range(1, {n} + 1):
            TapPort(f"tap{{k}}", TapPortArgs(conn, f"vif{{k}}.0", bridge=br))
        """
    )


def program_noop(n: int) -> str:
    return textwrap.dedent(
        f"""
        import pulumi
        from kvmnet_provider.testing.roundtrip import Noop

        br = Noop("br", message={BRIDGE!r})
        fwd = Noop("fwd", message="ip_forward")
        nat = Noop("nat", message={NAT_NET!r}, opts=pulumi.ResourceOptions(depends_on=[br]))
        for k in range(1, {n} + 1):
            Noop(f"tap{{k}}", message=br.message.apply(lambda b, k=k: f"vif{{k}}.0@{{b}}"))
        """
    )


CREATED_RE = re.compile(r"\+ (\d+) created")
DELETED_RE = re.compile(r"- (\d+) deleted")


def _count(regex: re.Pattern[str], text: str) -> int:
    found = regex.search(text)
    return int(found.group(1)) if found else -1


def run_pulumi(stack: TestStack, key: str, n: int, res: Rounds, host: Host | None) -> None:
    want = n + 4  # N taps, bridge, forwarding, rule, and the stack itself
    t = _now()
    up = stack.up()
    res.add(f"{key}.up", _now() - t)
    if _count(CREATED_RE, up.stdout) != want:
        raise RuntimeError(f"{key}: pulumi up did not create {want} resources:\n{up.stdout[-800:]}")
    if host is not None and host.bridge_ports() != n:
        raise RuntimeError(f"{key}: the bridge does not have {n} taps after pulumi up")
    t = _now()
    down = stack.destroy()
    res.add(f"{key}.destroy", _now() - t)
    if _count(DELETED_RE, down.stdout) != want:
        raise RuntimeError(f"{key}: destroy did not delete {want}:\n{down.stdout[-800:]}")
    if host is not None:
        host.require_clean(f"pulumi destroy ({key})")


# --- profile: the same agent calls in-process on the host (no SSH, no JSON) ---------------
def inproc_main(n: int, profile: bool) -> None:
    """Runs INSIDE the lab host's namespace: time each handler called directly."""
    from kvmnet_provider.agent import server

    handlers = server.build_handlers()
    times: dict[str, dict[str, float]] = {}
    per_op: dict[str, list[float]] = {}
    prof = cProfile.Profile() if profile else None
    for phase, ops in kvmnet_ops(n).items():
        total = 0.0
        for op, args in ops:
            if prof:
                prof.enable()
            t = _now()
            answer = server.handle(handlers, {"id": 1, "op": op, "args": args})
            dt = _now() - t
            if prof:
                prof.disable()
            if not answer["ok"]:
                raise SystemExit(f"{op}: {answer['error']}")
            total += dt
            per_op.setdefault(op, []).append(dt)
        times[phase] = {"total": total}
    top = ""
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
        top = buf.getvalue()
    print(json.dumps({"phases": times, "per_op": per_op, "profile": top}))


def run_inproc(
    host: Host, n: int, res: Rounds, per_op: dict[str, list[float]], profile: bool
) -> str:
    argv = [sys.executable, str(Path(__file__).resolve()), "--inproc", str(n)]
    if profile:
        argv.append("--profile")
    doc = json.loads(host.sh(argv))
    host.require_clean("an in-process round")
    if profile:  # profiling slows the calls down: its round is not counted
        return str(doc["profile"])
    for phase, v in doc["phases"].items():
        res.add(f"inproc.{phase}", v["total"])
    res.add("inproc.changes", doc["phases"]["create"]["total"] + doc["phases"]["delete"]["total"])
    for op, values in doc["per_op"].items():
        per_op.setdefault(op, []).extend(values)
    return ""


# --- report --------------------------------------------------------------------------------
def fmt(v: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def report(n: int, res: Rounds, per_op: dict[str, list[float]], profile: str) -> str:
    ch, rd = change_count(n), read_count(n)
    rows = [
        ("kvmnet agent, open session", "kvmnet"),
        (f"  same, taps deleted {ENGINE_PARALLEL} at once", "kvmnet4"),
        ("one script, one SSH session", "script"),
        ("new SSH connection per cmd", "conn"),
        ("(profile) agent in-process", "inproc"),
    ]
    out = [
        f"== NAT model, {n} taps: {ch} changes (build {5 + 2 * n} + teardown {3 + n}), "
        f"{rd} reads; medians, seconds ==",
        f"{'method':<30}{'rounds':>7}{'create':>9}{'read':>9}{'delete':>9}"
        f"{'changes':>9}{'ms/change':>11}{'ms/read':>9}",
    ]
    for label, key in rows:
        changes, read = res.med(f"{key}.changes"), res.med(f"{key}.read")
        out.append(
            f"{label:<30}{res.count(key + '.changes'):>7}{fmt(res.med(key + '.create')):>9}"
            f"{fmt(read):>9}{fmt(res.med(key + '.delete')):>9}{fmt(changes):>9}"
            f"{fmt(None if changes is None else changes / ch, 1000, 2):>11}"
            f"{fmt(None if read is None else read / rd, 1000, 2):>9}"
        )
    out.append(
        "  'changes' = create + delete phases. kvmnet: sum of call round trips on the open "
        "session.\n  script: wall of the exec (channel open + bash + create + delete), minus "
        "its read phase.\n  connection per command: changes only (reads not run)."
    )
    out.append(
        f"setup (not in 'changes'): kvmnet connect + agent start {fmt(res.med('kvmnet.setup'))} s;"
        f" paramiko connect {fmt(res.med('script.connect'))} s; script channel open + bash start "
        f"{fmt(res.med('script.session'))} s; agent ping round trip "
        f"{fmt(res.med('kvmnet.ping'), 1000, 2)} ms"
    )
    out.append(f"{'pulumi':<30}{'rounds':>7}{'kvmnet':>9}{'noop':>9}{'ratio':>9}")
    for verb in ("up", "destroy"):
        k, z = res.med(f"pulumi.kvmnet.{verb}"), res.med(f"pulumi.noop.{verb}")
        out.append(
            f"{'pulumi ' + verb:<30}{res.count('pulumi.kvmnet.' + verb):>7}{fmt(k, 1, 2):>9}"
            f"{fmt(z, 1, 2):>9}{ratio(k, z):>9}"
        )
    kv, sc, cn = res.med("kvmnet.changes"), res.med("script.changes"), res.med("conn.changes")
    kv_all = None if kv is None else kv + (res.med("kvmnet.read") or 0.0)
    sc_c, sc_d = res.med("script.create"), res.med("script.delete")
    script_phases = None if sc_c is None or sc_d is None else sc_c + sc_d
    out += [
        "ratios:",
        f"  kvmnet / one-session script (changes)      {ratio(kv, sc):>6}   target <= 1.0",
        f"  kvmnet / one-session script (incl. reads)  {ratio(kv_all, res.med('script.total')):>6}",
        f"  kvmnet / script's own phases (no channel open, no bash start)  "
        f"{ratio(kv, script_phases):>6}",
        f"  connection per command / kvmnet (changes)  {ratio(cn, kv):>6}   target >= 20",
        f"  with taps deleted {ENGINE_PARALLEL} at once, as pulumi destroy does:",
        f"    kvmnet / one-session script (changes)    {ratio(res.med('kvmnet4.changes'), sc):>6}",
        f"    connection per command / kvmnet          {ratio(cn, res.med('kvmnet4.changes')):>6}",
        f"  pulumi up kvmnet / noop                    "
        f"{ratio(res.med('pulumi.kvmnet.up'), res.med('pulumi.noop.up')):>6}   target <= 1.3",
        f"  pulumi destroy kvmnet / noop               "
        f"{ratio(res.med('pulumi.kvmnet.destroy'), res.med('pulumi.noop.destroy')):>6}"
        "   target <= 1.3",
        "per agent op, median ms (remote round trip | in-process on the host):",
    ]
    for op in sorted(k for k in per_op if not k.startswith("inproc:")):
        remote = statistics.median(per_op[op])
        local = per_op.get("inproc:" + op)
        out.append(
            f"  {op:<20}{remote * 1000:>8.2f} |"
            f"{statistics.median(local) * 1000 if local else 0:>8.2f}   (x{len(per_op[op])})"
        )
    if profile:
        out += ["in-process cProfile of one extra, untimed round (tottime, top 12):", profile]
    return "\n".join(out)


# --- driver --------------------------------------------------------------------------------
@contextmanager
def own_lab(base: Path) -> Iterator[tuple[Lab, HostStatus]]:
    with fresh_lab("kb", hosts=1, base=base) as (lab, status):
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
