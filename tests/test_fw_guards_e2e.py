"""The host agent's own firewall guards, through the real engine on a lab host:
- a port forward that would capture the host's sshd, declared so that the provider's check
  (host_port against connection.port, destination against connection.host) cannot see it,
  is refused at `up` by the agent in one line, the host untouched;
- while another process holds /run/xtables.lock (as iptables, Docker or fail2ban do), `up`
  waits for it and then succeeds.

The provider reaches the host through a TCP relay on this machine (localhost:RANDOM to the
host's sshd), as through a bastion or a NAT in front of sshd: what the program says is not
where the session arrives."""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.lab import HostStatus, Lab, LabStatus
from kvmnet_lab.lab.sshclient import connect_host, run_command
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
from kvmnet_lab.testing.stack import TestStack
from kvmnet_lab.toolchain import venv_python

pytestmark = pytest.mark.e2e


class Relay:
    """localhost:PORT -> target, one thread pair per connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture()
def relay(lab: LabStatus) -> Iterator[Relay]:
    h = lab.hosts[0]
    r = Relay((h.address, h.port))
    try:
        yield r
    finally:
        r.close()


def host_key(h: HostStatus) -> str:
    """The host's key as connection.host_key pins it (`TYPE BASE64`)."""
    for line in Path(h.known_hosts).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == h.address:
            return f"{fields[1]} {fields[2]}"
    raise AssertionError(f"no known_hosts entry for {h.address}")


def forward_program(h: HostStatus, host: str, port: int, backend: str, body: str) -> str:
    return textwrap.dedent(
        f"""
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources import *

        c = HostSettings(host={host!r}, port={port}, host_key={host_key(h)!r},
                         private_key_path={h.private_key!r}, python={str(venv_python())!r},
                         firewall_backend={backend!r})
        """
    ) + textwrap.dedent(body)


def snapshot(lab_api: Lab, ns: str) -> dict[str, object]:
    nft = run_in(lab_api, ns, ["nft", "list", "ruleset"])
    return {**host_snapshot(lab_api, ns), "nftables": nft}


@pytest.mark.parametrize(
    "destination, backend", [(None, "iptables"), ("host", "nftables")], ids=["any", "address"]
)
def test_a_forward_of_the_ssh_port_the_provider_cannot_see_is_refused_by_the_agent(
    destination: str | None,
    backend: str,
    relay: Relay,
    tmp_path: Path,
    lab: LabStatus,
    lab_api: Lab,
) -> None:
    h = lab.hosts[0]
    ns = h.namespace
    before = snapshot(lab_api, ns)
    dest = None if destination is None else h.address

    def program(host_port: int) -> str:
        body = f"""
        PortForward("pf", PortForwardArgs(connection=c, host_port={host_port},
                    guest_address="10.0.7.11", guest_port=22, destination={dest!r}))
        """
        return forward_program(h, "localhost", relay.port, backend, body)

    stack = TestStack(tmp_path, program(h.port), project="sshguard")
    try:
        failed = stack.up(check=False)
        text = failed.stdout + failed.stderr
        assert failed.returncode != 0, text
        lines = [line for line in text.splitlines() if f"host_port must not be {h.port}" in line]
        assert lines, text
        line = lines[0]
        assert f"{h.address}:{h.port}" in line and "pick another host_port" in line, line
        assert f"tcp/{h.port}" in line
        assert snapshot(lab_api, ns) == before, "\n".join(
            diff_snapshots(before, snapshot(lab_api, ns))
        )

        # Another port is forwarded as usual, through the same relay.
        stack.set_program(program(2222))
        stack.up()
        stack.preview_no_changes()
        stack.destroy()
        after = snapshot(lab_api, ns)
        assert after == before, "\n".join(diff_snapshots(before, after))
    finally:
        stack.remove()


@pytest.mark.parametrize("prefix", ["env -u SSH_CONNECTION", "sudo -n"])
def test_the_agent_finds_its_session_in_proc_without_ssh_connection(
    prefix: str, lab: LabStatus
) -> None:
    """Without SSH_CONNECTION (sudo resets the environment by default), the session is read
    from the sshd above the process: its socket, in its namespace's /proc/PID/net/tcp."""
    if prefix.startswith("sudo") and shutil.which("sudo") is None:
        pytest.skip("sudo is not installed")
    h = lab.hosts[0]
    code = ("import os; from kvmnet_provider.agent import ssh_session as s; "
            "print(sorted(c.local for c in s.connections_from_proc()), "
            "sorted(c.local for c in s.connection_of(os.environ))); "
            "print(sorted(s.session_peers()))")  # fmt: skip
    client = connect_host(h)
    try:
        status, out = run_command(client, f"{prefix} {venv_python()} -c {shlex.quote(code)}", 60)
    finally:
        client.close()
    assert status == 0, out
    arrived, peers = out.strip().splitlines()
    assert arrived == f"[Endpoint(address='{h.address}', port={h.port})] []", out
    assert peers == f"['{lab.operator_address}']", out  # the subnet guard's, from /proc too


# --- the xtables lock -------------------------------------------------------------------------
BOOTSTRAP_MARK = b"host agent's bootstrap"


def agents_in(ns: str) -> list[int]:
    """The pids of kvmnet agents running in the lab host's namespace."""
    want = os.stat(f"/run/netns/{ns}").st_ino
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if BOOTSTRAP_MARK not in f.read():
                    continue
            if os.stat(f"/proc/{entry}/ns/net").st_ino == want:
                found.append(int(entry))
        except OSError:
            continue
    return found


def opens_lock(pid: int) -> bool:
    """Whether `pid` has /run/xtables.lock open: the agent keeps it open while it waits."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "/run/xtables.lock":
                return True
        except OSError:
            continue
    return False


def nat_rules(lab_api: Lab, ns: str) -> str:
    return run_in(lab_api, ns, ["iptables-legacy-save", "-t", "nat"])


def test_up_waits_for_the_xtables_lock_held_by_another_process(
    tmp_path: Path, lab: LabStatus, lab_api: Lab
) -> None:
    h = lab.hosts[0]
    ns = h.namespace
    before = snapshot(lab_api, ns)
    body = """
    MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source="10.0.8.0/24"))
    PortForward("pf", PortForwardArgs(connection=c, host_port=8088,
                guest_address="10.0.8.11", guest_port=80))
    """
    program = forward_program(h, h.address, h.port, "iptables", body)
    stack = TestStack(tmp_path, program, project="xtlock")
    seen: dict[str, object] = {}

    def hold_when_the_agent_starts() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not agents_in(ns):
            time.sleep(0.02)
        # Held until the agent is seen waiting for it (a loaded machine may take seconds to
        # get the agent there), then a second more; iptables and the agent use flock(2) too.
        with open("/run/xtables.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            held_at = time.monotonic()
            ours, waiting = [], []
            release_at = held_at + 120
            while time.monotonic() < release_at:  # iptables-save takes no lock
                ours.append("xtlock/dev" in nat_rules(lab_api, ns))
                waiting.append(any(opens_lock(pid) for pid in agents_in(ns)))
                if waiting[-1]:
                    release_at = min(release_at, time.monotonic() + 1.0)
                time.sleep(0.1)
            seen.update(held=time.monotonic() - held_at, rules_while_held=ours, waited=waiting)
            fcntl.flock(lock, fcntl.LOCK_UN)

    watcher = threading.Thread(target=hold_when_the_agent_starts, daemon=True)
    watcher.start()
    try:
        stack.up()
        watcher.join(30)
        assert seen and float(seen["held"]) >= 1.0, seen  # type: ignore[arg-type]
        assert not any(seen["rules_while_held"]), seen  # type: ignore[arg-type]
        assert any(seen["waited"]), seen  # type: ignore[arg-type]  # the agent waited for it
        text = nat_rules(lab_api, ns)
        assert "xtlock/dev/PortForward/pf" in text and "xtlock/dev/MasqueradeRule/m" in text
        stack.preview_no_changes()
        stack.destroy()
        after = snapshot(lab_api, ns)
        assert after == before, "\n".join(diff_snapshots(before, after))
    finally:
        stack.remove()


PROBE = """
import subprocess
from kvmnet_provider.agent.firewall.iptc_import import import_iptc
import_iptc()
from kvmnet_provider.agent.firewall import iptables_nat
spec = {"owner": "probe/dev/PortForward/pf", "host_port": 8089, "guest_address": "10.0.9.11",
        "guest_port": 80}
iptables_nat.dnat_ensure(spec)
iptables_nat.dnat_remove(spec["owner"])
# another program adds a rule: the table has as many rules as before kvmnet's removal
subprocess.run(["iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-s", "192.0.2.5",
                "-j", "RETURN"], check=True)
print(iptables_nat.dnat_read(spec["owner"])["count"])
"""


def test_a_later_read_does_not_commit_a_finished_transaction_over_another_programs_rule(
    lab: LabStatus, lab_api: Lab
) -> None:
    """python-iptables' refresh() commits a handle still marked changed: after kvmnet's
    removal, the next read would have put back the table as kvmnet left it, over the rule
    another program (Docker, say) added in between."""
    ns = lab.hosts[0].namespace
    foreign = ["-s", "192.0.2.5/32", "-j", "RETURN"]
    try:
        out = run_in(lab_api, ns, [str(venv_python()), "-c", PROBE])
        assert out.strip() == "0"
        assert f"-A PREROUTING {' '.join(foreign)}" in nat_rules(lab_api, ns)
    finally:
        run_in(lab_api, ns, ["iptables-legacy", "-t", "nat", "-D", "PREROUTING", *foreign],
               check=False)  # fmt: skip
