"""The NAT-model workload: its changes, counted; the host kept clean; kvmnet's own runs
(agent calls over one session, `pulumi up`/`destroy`, the same calls in-process)."""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import re
import statistics
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import HostStatus, Lab
from kvmnet_lab.testing.stack import TestStack

from kvmnet_provider.connection.session import AgentSession
from kvmnet_provider.connection.settings import HostSettings
from kvmnet_provider.spec import masquerade

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

    Build: bridge add, address, bridge up, ip_forward on, the masquerade (5), then per tap:
    tap add, attach to the bridge + up (2 each). Teardown: the masquerade's delete, ip_forward
    restore, each tap delete, bridge delete (3 + N). Total 8 + 3N. Every method is charged
    this count. The masquerade counts as one change each way, though it is libvirt's five
    rules (spec/masquerade.py) for every method: the script adds and deletes them one command
    each, kvmnet in one commit.
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


def shell_rules() -> list[str]:
    """kvmnet's masquerade (libvirt's five rules, in order) as iptables arguments, marked."""
    out = []
    for rule in masquerade.rules(NAT_NET, None):
        dst = ("! " if rule["destination_excluded"] else "") + f"-d {rule['destination']}"
        proto = f" -p {rule['protocol']}" if rule["protocol"] else ""
        ports = f" --to-ports {rule['to_ports']}" if rule["to_ports"] else ""
        out.append(
            f"-s {rule['source']} {dst}{proto} -m comment --comment {SHELL_MARK} "
            f"-j {rule['target']}{ports}"
        )
    return out


def shell_commands(n: int, forward_before: str) -> dict[str, list[str]]:
    """The same changes as the tutorial's commands (iptables-legacy: the backend kvmnet uses)."""
    rules = shell_rules()
    create = [
        f"ip link add {BRIDGE} type bridge stp_state 0 forward_delay 0",
        f"ip addr add {BRIDGE_ADDR} dev {BRIDGE}",
        f"ip link set {BRIDGE} up",
        "sysctl -qw net.ipv4.ip_forward=1",
    ] + [f"iptables-legacy -t nat -A POSTROUTING {rule}" for rule in rules]
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
    delete = [f"iptables-legacy -t nat -D POSTROUTING {rule}" for rule in rules]
    delete += [f"sysctl -qw net.ipv4.ip_forward={forward_before}"]
    delete += [f"ip link del {t}" for t in taps(n)] + [f"ip link del {BRIDGE}"]
    extra = 2 * (len(rules) - 1)  # the masquerade's rules count as one change each way
    assert len(create) + len(delete) - extra == change_count(n)
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
        if "MASQUERADE" in nat or SHELL_MARK in nat or "kvmnet:" in nat:
            found.append("a masquerade rule is left in nat POSTROUTING")
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
    return host_settings(h, sys.executable)


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
    argv = [sys.executable, str(Path(__file__).with_name("bench_nat.py")), "--inproc", str(n)]
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
