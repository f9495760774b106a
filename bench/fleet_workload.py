"""The fleet workload: H lab hosts, each a NAT network of N taps plus G guests; its programs
(kvmnet's and the do-nothing floor of the same graph), the hosts' CPU accounting, and the
remote cost of the changes on every host at once (agent sessions vs one shell script each)."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kvmnet_lab.lab import HostStatus
from nat_baselines import run_kernel_floor, run_script
from nat_workload import (
    BRIDGE,
    BRIDGE_ADDR,
    NAT_NET,
    Host,
    Rounds,
    _now,
    change_count,
    kvmnet_ops,
    settings_for,
)

from kvmnet_provider.connection.session import AgentSession
from kvmnet_provider.connection.ssh import connect

TICK = os.sysconf("SC_CLK_TCK")


def resource_count(hosts: int, taps: int, guests: int) -> int:
    """Per host: bridge, forwarding, masquerade, N taps, and per guest its tap and itself."""
    return hosts * (3 + taps + 2 * guests)


# --- the programs: the same graph, kvmnet's resources and Noop ------------------------------
def program_fleet(hosts: list[HostStatus], taps: int, guests: int, image: Path) -> str:
    conns = [settings_for(h).to_props() for h in hosts]
    return textwrap.dedent(
        f"""
        import pulumi
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources import (
            Bridge, BridgeArgs, ForwardingSetting, ForwardingSettingArgs, GuestNicArgs,
            MasqueradeRule, MasqueradeRuleArgs, QemuGuest, QemuGuestArgs, TapPort, TapPortArgs,
        )

        for i, props in enumerate({conns!r}, start=1):
            conn, p = HostSettings(**props), f"h{{i}}-"
            br = Bridge(p + "br", BridgeArgs(conn, {BRIDGE!r}, addresses=[{BRIDGE_ADDR!r}]))
            fwd = ForwardingSetting(p + "fwd", ForwardingSettingArgs(conn))
            nat = MasqueradeRule(p + "nat", MasqueradeRuleArgs(conn, {NAT_NET!r}),
                                 pulumi.ResourceOptions(depends_on=[br]))
            for k in range(1, {taps} + 1):
                TapPort(p + f"tap{{k}}", TapPortArgs(conn, f"vif{{k}}.0", bridge=br))
            for g in range(1, {guests} + 1):
                name = f"vif{{{taps} + g}}.0"
                tap = TapPort(p + f"gtap{{g}}", TapPortArgs(conn, name, bridge=br))
                QemuGuest(
                    p + f"g{{g}}",
                    QemuGuestArgs(
                        conn, f"g{{g}}", kernel={str(image / "vmlinuz")!r},
                        initrd={str(image / "initrd.img")!r},
                        cmdline=f"console=ttyS0 quiet kvmnet.name=g{{g}} "
                                f"kvmnet.ip=10.0.1.{{10 + g}}/24",
                        nics=[GuestNicArgs(tap=tap, mac=f"52:54:00:00:01:{{g:02x}}")],
                        accelerator="tcg", stop_timeout=1,
                    ),
                    pulumi.ResourceOptions(depends_on=[tap, fwd, nat]),
                )
        """
    )


def program_fleet_noop(hosts: int, taps: int, guests: int) -> str:
    return textwrap.dedent(
        f"""
        import pulumi
        from kvmnet_lab.testing.roundtrip import Noop

        for i in range(1, {hosts} + 1):
            p = f"h{{i}}-"
            br = Noop(p + "br", message=f"br-in@h{{i}}")
            fwd = Noop(p + "fwd", message=f"ip_forward@h{{i}}")
            nat = Noop(p + "nat", message={NAT_NET!r}, opts=pulumi.ResourceOptions(depends_on=[br]))
            for k in range(1, {taps} + 1):
                Noop(p + f"tap{{k}}", message=br.message.apply(lambda b, k=k: f"vif{{k}}.0@{{b}}"))
            for g in range(1, {guests} + 1):
                message = br.message.apply(lambda b, g=g: f"g{{g}}@{{b}}")
                tap = Noop(p + f"gtap{{g}}", message=message)
                Noop(p + f"g{{g}}", message=tap.message,
                     opts=pulumi.ResourceOptions(depends_on=[fwd, nat]))
        """
    )


# --- CPU accounting on the hosts ---------------------------------------------------------------
def _stat_ticks(pid: int, fields: tuple[int, ...]) -> int:
    """Sum of /proc/<pid>/stat fields (1-based numbers as in proc(5))."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rindex(")") + 2 :].split()  # field 3 onwards
    return sum(int(rest[f - 3]) for f in fields)


class ProcessCpu:
    """CPU seconds of the processes in the given host namespaces whose command line holds
    `marker` (the agents: b"kvmnet_agent"; the guests: b"qemu-system"), while entered.

    Agents outlive their SSH sessions by a moment and are then reaped by init, so no parent's
    accounting holds their time: every such process is sampled from /proc (every 0.1 s; a
    process's last tenth of a second, usually idle, can be missed)."""

    def __init__(self, namespaces: list[str], marker: bytes, interval: float = 0.1) -> None:
        self.inodes = {f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]" for ns in namespaces}
        self.marker = marker
        self.interval = interval
        self.ticks: dict[tuple[int, str], int] = {}  # (pid, start time) -> utime + stime
        self.at_start: dict[tuple[int, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[tuple[int, str], int]:
        found = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry.name}/ns/net") not in self.inodes:
                    continue
                if self.marker not in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                    continue
                text = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            rest = text[text.rindex(")") + 2 :].split()
            found[(int(entry.name), rest[19])] = int(rest[11]) + int(rest[12])
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.ticks.update(self.sample())

    def __enter__(self) -> ProcessCpu:
        self.at_start = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.ticks.update(self.sample())

    @property
    def seconds(self) -> float:
        """CPU time spent inside the window (processes alive at its start count from there)."""
        spent = sum(t - self.at_start.get(k, 0) for k, t in self.ticks.items())
        return spent / TICK


def settle_guests(namespaces: list[str], guests: int, timeout: float = 300) -> float:
    """Wait until the guests have booted: their QEMUs' CPU use falls under a tenth of a core
    each (TCG guests booting on two cores would otherwise starve what is measured next).
    Returns the seconds waited."""
    start = time.monotonic()
    probe = ProcessCpu(namespaces, b"qemu-system")
    while guests and time.monotonic() - start < timeout:
        before = sum(probe.sample().values())
        time.sleep(2)
        if (sum(probe.sample().values()) - before) / TICK / 2 < 0.1 * guests:
            break
    return time.monotonic() - start


def agent_cpu(session: AgentSession) -> float:
    """CPU seconds of one live agent process."""
    assert session.agent_pid is not None
    return _stat_ticks(int(session.agent_pid), (14, 15)) / TICK


# --- remote cost: every host at once ---------------------------------------------------------
def on_every_host(hosts: list[Host], work: Callable[[Host], None]) -> None:
    """`work` on every host at the same moment (one thread each), errors re-raised."""
    start = threading.Barrier(len(hosts))

    def run(host: Host) -> None:
        start.wait()
        work(host)

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for future in [pool.submit(run, h) for h in hosts]:
            future.result()


def kvmnet_changes(host: Host, n: int, res: Rounds) -> None:
    """The NAT network's create and delete phases as agent calls over one session; the wall
    time of the changes and the agent's own CPU time for them."""
    session = AgentSession(settings_for(host.status))
    try:
        session.call("ping", {})
        ops = kvmnet_ops(n)
        cpu, t = agent_cpu(session), _now()
        for phase in ("create", "delete"):
            for op, args in ops[phase]:
                session.call(op, args)
        res.add("kvmnet.changes", _now() - t)
        res.add("kvmnet.cpu", agent_cpu(session) - cpu)
    finally:
        session.close()
    host.require_clean("a kvmnet round")


def remote_round(hosts: list[Host], n: int, res: Rounds) -> None:
    """One round of each method on every host at once. Besides each host's own figures, the
    round's wall time (sessions started before the barrier, so it is the changes' time) per
    change of all hosts together: the fleet's throughput. The kernel floor makes the same
    changes with no session around them: the lab's hosts share one kernel."""
    t = _now()
    on_every_host(hosts, lambda h: kvmnet_changes(h, n, res))
    res.add("kvmnet.fleet", (_now() - t) / len(hosts))
    t = _now()
    on_every_host(hosts, lambda h: run_script(h, n, res))
    res.add("script.fleet", (_now() - t) / len(hosts))
    t = _now()
    on_every_host(hosts, lambda h: run_kernel_floor(h, n, res))
    res.add("kernel.fleet", (_now() - t) / len(hosts))


def per_change(res: Rounds, key: str, n: int) -> float | None:
    value = res.med(key)
    return None if value is None else value / change_count(n)


def wait_quiet(seconds: float = 0.5) -> None:
    """Let the hosts' sshds reap what the last command left (agents exit as SSH closes)."""
    time.sleep(seconds)


def describe(args: Any) -> str:
    return f"{args.taps} taps + {args.guests} guests per host"


# --- where a session's start goes --------------------------------------------------------------
def session_start(host: Host, res: Rounds, rounds: int = 5) -> None:
    """One host, no other load: the SSH handshake; a command of nothing (`exec true`) on that
    connection, which is the host's sshd and the user's shell (bash reads ~/.bashrc for a
    command sshd runs); a whole AgentSession up to the agent's hello; its agent's CPU."""
    settings = settings_for(host.status)
    for _ in range(rounds):
        t = _now()
        client = connect(settings)
        res.add("start.ssh", _now() - t)
        try:
            transport = client.get_transport()
            assert transport is not None
            t = _now()
            channel = transport.open_session()
            channel.exec_command("exec true")
            channel.recv_exit_status()
            res.add("start.shell", _now() - t)
        finally:
            client.close()
        t = _now()
        session = AgentSession(settings)
        res.add("start.session", _now() - t)
        res.add("start.agent_cpu", agent_cpu(session))
        session.close()
        wait_quiet(0.2)
