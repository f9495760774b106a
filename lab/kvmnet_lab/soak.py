"""A bounded fault soak: the NAT model with two guests on a lab host, one fault behind kvmnet's
back per cycle, then `pulumi refresh` + `pulumi up` through the real engine, which must
converge every time: a no-change preview and the model's reachability row from inside each
guest at once (no repair in the guests). The destroy at the end must leave the host as it
was before the stack (the lab's snapshot).

    python -m kvmnet_lab.soak --seconds 600        (make soak SOAK_SECONDS=600)
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .hostconfig import lab_stack_config
from .lab import Lab, LabStatus, fresh_lab
from .lab.faults import flush_kvmnet_rules, kill_processes, kvmnet_links, processes
from .lab.netns import delete_link, ip_json
from .probe import EXPECTED, GuestEndpoint, Outside, observe
from .testing import guest_image_dir
from .testing.snapshot import diff_snapshots, host_snapshot
from .testing.stack import STACK_PROGRAM, TestStack
from .toolchain import PulumiError

FAULTS = (
    "guest-killed",
    "dnsmasq-killed",
    "bridge-deleted",
    "tap-deleted",
    "rules-flushed",
    "ssh-cut-during-refresh",
)
BRIDGE_IP = "10.0.1.254"  # the NAT model's gateway (the stack program's default subnet)


@dataclass
class SoakReport:
    seconds: float = 0.0
    cycles: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    converged: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # "cycle N fault: what did not hold"
    leaks: list[str] = field(default_factory=list)  # what the final destroy left on the host
    repair_seconds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.cycles > 0 and not self.failures and not self.leaks

    def summary(self) -> str:
        lines = [
            f"fault soak: {self.cycles} cycles in {self.seconds:.0f} s, "
            f"{sum(self.converged.values())} converged, {len(self.failures)} did not, "
            f"{len(self.leaks)} leaks"
        ]
        for kind in sorted(self.faults):
            took = self.repair_seconds.get(kind) or [0.0]
            lines.append(
                f"  {kind:24} {self.converged[kind]}/{self.faults[kind]} converged "
                f"(refresh+up+preview+row: median {sorted(took)[len(took) // 2]:.0f} s, "
                f"max {max(took):.0f} s)"
            )
        lines += [f"  FAILED {f}" for f in self.failures]
        lines += [f"  LEAK {leak}" for leak in self.leaks]
        return "\n".join(lines)


class Soak:
    """One stack of the repository's program on host h1 of a lab, and its faults."""

    def __init__(self, lab: Lab, status: LabStatus, workdir: Path, log: Callable[[str], None]):
        self.lab, self.status, self.log = lab, status, log
        self.ns = status.hosts[0].namespace
        config = lab_stack_config(status, model="nat", image_dir=guest_image_dir())
        config["kvmnet:accelerator"] = "tcg"
        config["kvmnet:firewallBackend"] = "iptables"  # what the host snapshot reads
        self.stack = TestStack(workdir, STACK_PROGRAM, project="ksoak", stack="dev")
        self.stack.config_values(config)
        self.expect_mac: tuple[str, str] | None = None  # a bridge's MAC before it was deleted

    # --- faults ----------------------------------------------------------------------------
    def inject(self, kind: str, rng: random.Random) -> str:
        """Break one thing of kvmnet's on the host; says what."""
        if kind == "guest-killed":
            pids = processes(self.ns, "qemu")
            pid = rng.choice(pids)
            kill_processes([pid])
            return f"QEMU {pid} killed"
        if kind == "dnsmasq-killed":
            pids = processes(self.ns, "dnsmasq")
            kill_processes(pids)
            return f"dnsmasq {pids} killed"
        if kind in ("bridge-deleted", "tap-deleted"):
            links = kvmnet_links(self.ns, "bridge" if kind == "bridge-deleted" else "tun")
            name = rng.choice(links)
            if kind == "bridge-deleted":  # made again, it must be the same gateway
                self.expect_mac = (name, self._mac(name))
            delete_link(name, ns=self.ns)
            return f"{name} deleted"
        if kind == "rules-flushed":
            return f"{flush_kvmnet_rules(self.ns)} of kvmnet's rules/tables flushed"
        if kind == "ssh-cut-during-refresh":
            return self._cut_ssh_during_refresh()
        raise ValueError(kind)

    def _cut_ssh_during_refresh(self) -> str:
        sessions = len(self._sshd())
        argv = ["pulumi", "--non-interactive", "refresh", "--yes", "--skip-preview"]
        refresh = subprocess.Popen(
            [*argv, "--stack", self.stack.stack],
            cwd=self.stack.dir,
            env=self.stack.ws.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while len(self._sshd()) <= sessions and refresh.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            kill_processes(self._sshd())
            refresh.wait(300)
        finally:
            if refresh.poll() is None:
                refresh.kill()
                refresh.wait(30)
            self.lab.up(hosts=len(self.status.hosts))  # the host's sshd back
        return f"sshd cut during refresh (refresh exited {refresh.returncode})"

    def _mac(self, link: str) -> str:
        return str(ip_json("link", "show", "dev", link, ns=self.ns)[0]["address"])

    def _sshd(self) -> list[int]:
        return processes(self.ns, "sshd")

    # --- convergence ---------------------------------------------------------------------------
    def converge(self) -> None:
        """refresh + up, then no change left and the NAT row from inside both guests; raises
        AssertionError (or PulumiError) naming what did not hold."""
        self.stack.refresh()
        self.stack.up()
        self.stack.preview_no_changes()
        if self.expect_mac is not None:
            (bridge, mac), self.expect_mac = self.expect_mac, None
            if self._mac(bridge) != mac:
                raise AssertionError(f"{bridge} made again with MAC {self._mac(bridge)}, was {mac}")
        self.check_rows()

    def check_rows(self) -> None:
        guests = self.stack.outputs()["guests"]
        ends = [GuestEndpoint(n, g["address"], g["console"]) for n, g in sorted(guests.items())]
        ext = self.status.ext
        outside = Outside(ext.namespace, ext.address, ext.echo_port)
        host_ip = self.status.hosts[0].address
        for order in (ends, ends[::-1]):  # each guest probes, the other is its peer
            row = observe(order, BRIDGE_IP, host_ip, outside).as_dict()
            if row != EXPECTED["nat"]:
                raise AssertionError(f"from {order[0].name}: {row}")
        running = processes(self.ns, "qemu")
        if running != sorted(g["pid"] for g in guests.values()):
            raise AssertionError(f"QEMUs running {running}, the stack knows {guests}")


def run_soak(
    lab: Lab,
    status: LabStatus,
    workdir: Path,
    seconds: float,
    seed: int | None = None,
    first: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
) -> SoakReport:
    """Cycles of fault + refresh + up for `seconds` (the cycle under way finishes), the
    faults in `first` first, then at random; then destroy and the host compared with before."""
    rng = random.Random(seed)
    report = SoakReport()
    soak = Soak(lab, status, workdir, log)
    before = host_snapshot(lab, soak.ns)
    started = time.monotonic()
    try:
        soak.stack.up()
        soak.check_rows()
        log(f"up: the NAT row holds from both guests ({time.monotonic() - started:.0f} s)")
        while time.monotonic() - started < seconds:
            kind = first[report.cycles] if report.cycles < len(first) else rng.choice(FAULTS)
            report.cycles += 1
            report.faults[kind] += 1
            what = soak.inject(kind, rng)
            t0 = time.monotonic()
            try:
                soak.converge()
            except (AssertionError, PulumiError, OSError, subprocess.SubprocessError) as exc:
                reason = " ".join(str(exc).split())[-600:]
                report.failures.append(f"cycle {report.cycles} {kind} ({what}): {reason}")
                log(f"cycle {report.cycles}: {kind}: {what}: DID NOT CONVERGE: {reason}")
                continue
            took = time.monotonic() - t0
            report.converged[kind] += 1
            report.repair_seconds.setdefault(kind, []).append(took)
            log(f"cycle {report.cycles}: {kind}: {what}: converged in {took:.0f} s")
    finally:
        soak.stack.remove()  # destroy, then the stack goes
        kill_processes(processes(soak.ns, "qemu"))  # nothing may outlive the soak
        report.seconds = time.monotonic() - started
    after = host_snapshot(lab, soak.ns)
    report.leaks = diff_snapshots(before, after)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvmnet_lab.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvmnet-soak-") as tmp:
        with fresh_lab("ks", hosts=1, base=Path(tmp) / "lab") as (lab, status):
            report = run_soak(lab, status, Path(tmp) / "stack", args.seconds, args.seed)
    print(report.summary(), flush=True)
    if args.json is not None:
        doc: dict[str, Any] = {**report.__dict__, "ok": report.ok}
        args.json.write_text(json.dumps(doc, indent=1, default=dict))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
