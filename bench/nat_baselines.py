"""What kvmnet is measured against: one shell script in an open session, a new SSH
connection per command, and Pulumi's floor (the same graph of do-nothing resources)."""

from __future__ import annotations

import textwrap

import paramiko
from kvmnet_lab.lab import open_client
from nat_workload import (
    BRIDGE,
    NAT_NET,
    Host,
    Rounds,
    _now,
    shell_commands,
)


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


# --- the kernel's own cost: the same changes with no session and no per-command process ----
def kernel_floor_text(n: int, forward_before: str) -> str:
    """The script's changes, its `ip` commands as one `ip -batch` per phase (one process, one
    netlink socket): what the host's kernel takes for them, with next to no CPU around it."""
    cmds = shell_commands(n, forward_before)

    def phase(commands: list[str]) -> list[str]:
        batch = [c.removeprefix("ip ") for c in commands if c.startswith("ip ")]
        other = [c for c in commands if not c.startswith("ip ")]
        return ["ip -batch - <<'BATCH'", *batch, "BATCH", *other]

    lines = ["set -e", 'echo "T0 $EPOCHREALTIME"', *phase(cmds["create"])]
    lines += ['echo "T1 $EPOCHREALTIME"', *phase(cmds["delete"]), 'echo "T2 $EPOCHREALTIME"']
    return "\n".join(lines) + "\n"


def run_kernel_floor(host: Host, n: int, res: Rounds) -> None:
    """The changes made inside the host's namespace by one shell (no SSH): the kernel's time."""
    script = kernel_floor_text(n, host.forward_before)
    out = host.sh(["bash", "-c", script])
    marks = {k: float(v) for k, v in (line.split() for line in out.split("\n") if line)}
    res.add("kernel.create", marks["T1"] - marks["T0"])
    res.add("kernel.delete", marks["T2"] - marks["T1"])
    res.add("kernel.changes", marks["T2"] - marks["T0"])
    host.require_clean("a kernel-floor round")


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


def program_noop(n: int) -> str:
    return textwrap.dedent(
        f"""
        import pulumi
        from kvmnet_lab.testing.roundtrip import Noop

        br = Noop("br", message={BRIDGE!r})
        fwd = Noop("fwd", message="ip_forward")
        nat = Noop("nat", message={NAT_NET!r}, opts=pulumi.ResourceOptions(depends_on=[br]))
        for k in range(1, {n} + 1):
            Noop(f"tap{{k}}", message=br.message.apply(lambda b, k=k: f"vif{{k}}.0@{{b}}"))
        """
    )
