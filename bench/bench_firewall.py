#!/usr/bin/env python3
"""Benchmark: a NAT network's firewall (forward rules, MASQUERADE, one port forward) through
kvmnet's agent, in both backends, against the same changes made by a shell script in one open
SSH session; and the rule count of a NAT network with 2 and with 100 taps.

Run as root from the repo root:  .venv/bin/python bench/bench_firewall.py [--rounds 5]

It brings up its own lab (one KVM host, "kb<hex>") and always takes it down. Each backend runs
on a host set up like Docker's (FORWARD policy DROP, DOCKER-USER), in the legacy tables for the
iptables backend and through iptables-nft for the nftables backend. Not a test: nothing here
asserts on wall time; a round that leaves the host unclean stops the run.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import nat_workload
from bench_nat import load, own_lab
from kvmnet_lab.lab import open_client
from nat_baselines import exec_once
from nat_report import fmt, ratio
from nat_workload import Host, Rounds, _now, settings_for

from kvmnet_provider.connection.session import AgentSession

BRIDGE, NET, GUEST = "br-in", "10.0.1.0/24", "10.0.1.11"
OWNER = "bench/fw"
TOOLS = {"iptables": "iptables-legacy", "nftables": "iptables-nft"}
Op = tuple[str, dict[str, Any]]
COUNTERS = re.compile(r"\[\d+:\d+\]|counter packets \d+ bytes \d+")


def kvmnet_ops(backend: str) -> dict[str, list[Op]]:
    net = {"mode": "nat", "bridge": BRIDGE, "subnet": NET, "backend": backend,
           "forwards": [{"guest": GUEST, "port": 8080}]}  # fmt: skip
    owners = {k: f"{OWNER}/{k}" for k in ("ForwardRules", "MasqueradeRule", "PortForward")}
    fr, ms, pf = (owners[k] for k in ("ForwardRules", "MasqueradeRule", "PortForward"))
    return {
        "create": [
            ("forward.ensure", {"owner": fr, **net}),
            ("masquerade.ensure", {"owner": ms, "source": NET, "backend": backend}),
            (
                "dnat.ensure",
                {
                    "owner": pf,
                    "host_port": 8080,
                    "guest_address": GUEST,
                    "guest_port": 8080,
                    "backend": backend,
                },
            ),  # fmt: skip
        ],
        "read": [
            ("forward.read", {"owner": fr, **net}),
            ("masquerade.read", {"owner": ms, "backend": backend}),
            ("dnat.read", {"owner": pf, "backend": backend}),
        ],
        "delete": [
            ("forward.remove", {"owner": fr, "backend": backend}),
            ("masquerade.remove", {"owner": ms, "backend": backend}),
            ("dnat.remove", {"owner": pf, "backend": backend}),
        ],
    }


# The same end state made by hand, one command per change (the count both rows share).
def legacy_script() -> dict[str, list[str]]:
    ipt = "iptables-legacy"
    c = "-m comment --comment kvmnet"
    create = [f"{ipt} -N {ch}" for ch in ("KVMNET_FWD", "KVMNET_FWX", "KVMNET_FWI", "KVMNET_FWO")]
    create += [f"{ipt} -A KVMNET_FWD {c} -j {ch}" for ch in ("KVMNET_FWX", "KVMNET_FWI",
                                                           "KVMNET_FWO")]  # fmt: skip
    create += [
        f"{ipt} -I DOCKER-USER 1 {c} -j KVMNET_FWD",
        f"{ipt} -A KVMNET_FWX -i {BRIDGE} -o {BRIDGE} {c} -j ACCEPT",
        f"{ipt} -A KVMNET_FWI -d {NET} -o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED "
        f"{c} -j ACCEPT",
        f"{ipt} -A KVMNET_FWI -d {GUEST}/32 -o {BRIDGE} -p tcp --dport 8080 -m conntrack "
        f"--ctstate DNAT {c} -j ACCEPT",
        f"{ipt} -A KVMNET_FWI -o {BRIDGE} {c} -j REJECT",
        f"{ipt} -A KVMNET_FWO -s {NET} -i {BRIDGE} {c} -j ACCEPT",
        f"{ipt} -A KVMNET_FWO -i {BRIDGE} {c} -j REJECT",
        f"{ipt} -t nat -A POSTROUTING -s {NET} ! -d {NET} {c} -j MASQUERADE",
        f"{ipt} -t nat -A PREROUTING -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 8080 {c} "
        f"-j DNAT --to-destination {GUEST}:8080",
    ]
    delete = [f"{ipt} -D DOCKER-USER {c} -j KVMNET_FWD"]
    delete += [f"{ipt} -F {ch}" for ch in ("KVMNET_FWD", "KVMNET_FWX", "KVMNET_FWI", "KVMNET_FWO")]
    delete += [f"{ipt} -X {ch}" for ch in ("KVMNET_FWD", "KVMNET_FWX", "KVMNET_FWI", "KVMNET_FWO")]
    delete += [f"{ipt} -t nat -F POSTROUTING", f"{ipt} -t nat -F PREROUTING"]
    read = [f"{ipt}-save -t filter", f"{ipt}-save -t nat"]
    return {"create": create, "read": read, "delete": delete}


def nft_script() -> dict[str, list[str]]:
    t = "ip kvmnet"
    c = "comment kvmnet"
    create = [
        f"nft add table {t}",
        f"nft 'add chain {t} forward {{ type filter hook forward priority -10; }}'",
        f"nft 'add chain {t} postrouting {{ type nat hook postrouting priority 100; }}'",
        f"nft 'add chain {t} prerouting {{ type nat hook prerouting priority -100; }}'",
    ]
    for ch in ("guest_cross", "guest_input", "guest_output"):
        create += [f"nft add chain {t} {ch}", f"nft add rule {t} forward jump {ch} {c}"]
    create += [
        f"nft add rule {t} guest_cross iifname {BRIDGE} oifname {BRIDGE} accept {c}",
        f"nft add rule {t} guest_input oifname {BRIDGE} ip daddr {NET} ct state "
        f"established,related accept {c}",
        f"nft add rule {t} guest_input oifname {BRIDGE} ip daddr {GUEST} tcp dport 8080 "
        f"ct status dnat accept {c}",
        f"nft add rule {t} guest_input oifname {BRIDGE} reject {c}",
        f"nft add rule {t} guest_output iifname {BRIDGE} ip saddr {NET} accept {c}",
        f"nft add rule {t} guest_output iifname {BRIDGE} reject {c}",
        f"nft add rule {t} postrouting ip saddr {NET} ip daddr != {NET} masquerade {c}",
        f"nft add rule {t} prerouting fib daddr type local tcp dport 8080 "
        f"dnat to {GUEST}:8080 {c}",
        "nft add chain ip filter KVMNET_FWD",
        f"nft insert rule ip filter DOCKER-USER jump KVMNET_FWD {c}",
        f"nft add rule ip filter KVMNET_FWD iifname {BRIDGE} oifname {BRIDGE} accept {c}",
        f"nft add rule ip filter KVMNET_FWD iifname {BRIDGE} ip saddr {NET} accept {c}",
        f"nft add rule ip filter KVMNET_FWD oifname {BRIDGE} ip daddr {NET} accept {c}",
    ]
    delete = [
        "iptables-nft -D DOCKER-USER -m comment --comment kvmnet -j KVMNET_FWD",
        "nft flush chain ip filter KVMNET_FWD",
        "nft delete chain ip filter KVMNET_FWD",
        f"nft delete table {t}",
    ]
    read = ["nft -j list ruleset"]
    return {"create": create, "read": read, "delete": delete}


SCRIPTS = {"iptables": legacy_script, "nftables": nft_script}


def changes(backend: str) -> int:
    cmds = SCRIPTS[backend]()
    return len(cmds["create"]) + len(cmds["delete"])


# --- the host ------------------------------------------------------------------------------
def docker_like(host: Host, backend: str, undo: bool = False) -> None:
    tool = TOOLS[backend]
    if undo:
        for args in (["-F"], ["-X"], ["-P", "FORWARD", "ACCEPT"]):
            host.lab.exec_in(host.status.name, [tool, *args], capture_output=True)
        if backend == "nftables":
            host.lab.exec_in(host.status.name, ["nft", "delete", "table", "ip", "filter"],
                             capture_output=True)  # fmt: skip
        return
    for args in (
        ["-P", "FORWARD", "DROP"],
        ["-N", "DOCKER-USER"],
        ["-A", "DOCKER-USER", "-j", "RETURN"],
        ["-A", "FORWARD", "-j", "DOCKER-USER"],
    ):
        host.sh([tool, *args])  # fmt: skip


def firewall_text(host: Host) -> str:
    """Both backends' rules, without the save dates and the counters. Legacy tables are asked
    for by name: that instantiates them, so a table that came to life compares equal."""
    text = "".join(host.sh(["iptables-legacy-save", "-t", t]) for t in ("filter", "nat"))
    text += host.sh(["nft", "list", "ruleset"])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return COUNTERS.sub("", "\n".join(lines))


def rule_count(host: Host) -> int:
    """Rules carrying a kvmnet comment, in both backends (each printed once per rule)."""
    text = host.sh(["iptables-legacy-save"]) + host.sh(["nft", "list", "ruleset"])
    lines = [line.strip() for line in text.splitlines()]
    return sum(1 for line in lines if "comment" in line and "kvmnet" in line)


def require_clean(host: Host, before: str, after: str) -> None:
    now = firewall_text(host)
    if now != before:
        diff = difflib.unified_diff(before.splitlines(), now.splitlines(), lineterm="", n=1)
        raise RuntimeError(f"firewall not as before after {after}:\n" + "\n".join(diff))


# --- methods -------------------------------------------------------------------------------
def run_kvmnet(host: Host, backend: str, res: Rounds, before: str) -> None:
    session = AgentSession(settings_for(host.status))
    try:
        session.call("ping", {})
        for phase, ops in kvmnet_ops(backend).items():
            t = _now()
            for op, args in ops:
                answer = session.call(op, args)
                if op.endswith(".ensure") and answer.get("backend") != backend:
                    raise RuntimeError(f"{op} went to {answer.get('backend')}")
            res.add(f"kvmnet.{phase}", _now() - t)
        res.add("kvmnet.changes", res.samples["kvmnet.create"][-1]
                + res.samples["kvmnet.delete"][-1])  # fmt: skip
    finally:
        session.close()
    require_clean(host, before, "a kvmnet round")


def run_script(host: Host, backend: str, res: Rounds, before: str) -> None:
    h = host.status
    client = open_client(h.address, h.port, h.user, h.private_key, h.known_hosts, timeout=10)
    try:
        exec_once(client, "true")
        cmds = SCRIPTS[backend]()
        lines = ["set -e", 'echo "T0 $EPOCHREALTIME"', *cmds["create"], 'echo "T1 $EPOCHREALTIME"']
        lines += [f"{c} >/dev/null" for c in cmds["read"]] + ['echo "T2 $EPOCHREALTIME"']
        lines += [*cmds["delete"], 'echo "T3 $EPOCHREALTIME"']
        t = _now()
        out = exec_once(client, "bash -s", "\n".join(lines) + "\n")
        wall = _now() - t
    finally:
        client.close()
    marks = {k: float(v) for k, v in (line.split() for line in out.split("\n") if line)}
    res.add("script.changes", wall - (marks["T2"] - marks["T1"]))
    require_clean(host, before, "a script round")


def taps_add_no_rule(host: Host, backend: str) -> tuple[int, int]:
    """Rule count of the NAT network's firewall with 2 taps and with 100 on its bridge (the
    bridge and taps as bench_nat makes them)."""
    links = nat_workload.kvmnet_ops(100)
    bridge = next(op for op in links["create"] if op[0] == "bridge.create")
    taps = [op for op in links["create"] if op[0] == "tap.create"]
    unlink = [op for op in links["delete"] if op[0] == "link.delete"]
    session = AgentSession(settings_for(host.status))
    counts: list[int] = []
    try:
        session.call(*bridge)
        for start, n in ((0, 2), (2, 100)):
            for op, args in taps[start:n]:
                session.call(op, args)
            for op, args in kvmnet_ops(backend)["create"]:
                session.call(op, args)
            counts.append(rule_count(host))
        for op, args in kvmnet_ops(backend)["delete"] + unlink:
            session.call(op, args)
    finally:
        session.close()
    return counts[0], counts[1]


def report(backend: str, res: Rounds, counts: tuple[int, int]) -> str:
    n = changes(backend)
    k, s = res.med("kvmnet.changes"), res.med("script.changes")
    rows = [
        f"### {backend} backend ({TOOLS[backend]} host, DROP policy, DOCKER-USER): "
        f"{n} changes (forward rules, MASQUERADE, one port forward; made and removed)",
        "",
        "| | median | per change |",
        "|---|---|---|",
        f"| kvmnet agent, open session | {fmt(k, 1000, 1)} ms | {fmt(k and k / n, 1000, 2)} ms |",
        f"| one script, one open session | {fmt(s, 1000, 1)} ms | {fmt(s and s / n, 1000, 2)} ms |",
        f"| kvmnet / script | {ratio(k, s)} | |",
        f"| kvmnet read of all three | {fmt(res.med('kvmnet.read'), 1000, 1)} ms | |",
        "",
        f"Rules carrying a kvmnet comment: {counts[0]} with 2 taps, {counts[1]} with 100 taps.",
    ]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start: {load()}", flush=True)
    out = []
    with (
        tempfile.TemporaryDirectory(prefix="kvmnet-bench-") as tmp,
        own_lab(Path(tmp)) as (
            lab,
            h,
        ),
    ):
        host = Host(lab, h)
        for backend in ("iptables", "nftables"):
            docker_like(host, backend)
            try:
                before = firewall_text(host)
                res = Rounds()
                for _ in range(args.rounds):
                    run_kvmnet(host, backend, res, before)
                    run_script(host, backend, res, before)
                counts = taps_add_no_rule(host, backend)
                require_clean(host, before, "the 100-tap count")
            finally:
                docker_like(host, backend, undo=True)
            out.append(report(backend, res, counts))
            print(out[-1] + "\n", flush=True)
    print(json.dumps({"load_after": load(), "rounds": args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
