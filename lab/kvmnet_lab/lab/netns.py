"""Thin wrappers over `ip` (argv lists only, never a shell) for namespaces, links, addresses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import Any

IP = "ip"


class CommandError(RuntimeError):
    """A command failed; carries argv, return code and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(argv)!s} failed ({returncode}): {self.stderr}")


def run(argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> str:
    """Run argv, return stdout; raise CommandError on failure when check is set."""
    proc = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    argv = [IP]
    if ns is not None:
        argv += ["-n", ns]
    return run([*argv, *args], check=check)


def ip_json(*args: str, ns: str | None = None) -> list[dict[str, Any]]:
    out = ip("-j", *args, ns=ns)
    data = json.loads(out) if out.strip() else []
    return data if isinstance(data, list) else []


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside namespace `ns`."""
    return [IP, "netns", "exec", ns, *argv]


# --- namespaces -----------------------------------------------------------------------
def list_namespaces() -> list[str]:
    out = run([IP, "netns", "list"])
    # lines look like "name" or "name (id: 3)"
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_exists(ns: str) -> bool:
    return ns in list_namespaces()


def ensure_namespace(ns: str) -> None:
    if not namespace_exists(ns):
        run([IP, "netns", "add", ns])
    ip("link", "set", "lo", "up", ns=ns)


def delete_namespace(ns: str) -> None:
    run([IP, "netns", "delete", ns], check=False)


def namespace_pids(ns: str) -> list[int]:
    out = run([IP, "netns", "pids", ns], check=False)
    return [int(tok) for tok in out.split() if tok.isdigit()]


def set_sysctl(ns: str, key: str, value: str) -> None:
    """Write a sysctl inside namespace ns (never the root namespace)."""
    run(exec_argv(ns, ["sysctl", "-q", "-w", f"{key}={value}"]))


# --- links ----------------------------------------------------------------------------
def link_exists(name: str, ns: str | None = None) -> bool:
    return bool(ip("link", "show", "dev", name, ns=ns, check=False).strip())


def delete_link(name: str, ns: str | None = None) -> None:
    if link_exists(name, ns=ns):
        ip("link", "delete", "dev", name, ns=ns, check=False)


def ensure_veth(
    name: str, ns: str | None, peer: str, peer_ns: str, rename_peer_to: str | None = None
) -> None:
    """Create veth `name` (in ns, None = root) with its peer directly in peer_ns.

    The peer is created as `peer` and optionally renamed inside peer_ns (e.g. to eth0).
    If one end exists without the other, the stale end is deleted and the pair remade.
    """
    final_peer = rename_peer_to or peer
    here = link_exists(name, ns=ns)
    there = link_exists(final_peer, ns=peer_ns)
    if here and there:
        return
    if here:
        delete_link(name, ns=ns)
    if there:
        delete_link(final_peer, ns=peer_ns)
    ip("link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns, ns=ns)
    if rename_peer_to and rename_peer_to != peer:
        ip("link", "set", "dev", peer, "name", rename_peer_to, ns=peer_ns)


def ensure_bridge(name: str, ns: str) -> None:
    if not link_exists(name, ns=ns):
        ip("link", "add", name, "type", "bridge", "stp_state", "0", ns=ns)
    ip("link", "set", "dev", name, "up", ns=ns)


def set_master(port: str, bridge: str, ns: str) -> None:
    ip("link", "set", "dev", port, "master", bridge, "up", ns=ns)


def link_up(name: str, ns: str | None = None) -> None:
    ip("link", "set", "dev", name, "up", ns=ns)


def ensure_address(dev: str, cidr: str, ns: str | None = None) -> None:
    ip("address", "replace", cidr, "dev", dev, ns=ns)


def ensure_default_route(via: str, ns: str) -> None:
    ip("route", "replace", "default", "via", via, ns=ns)


def root_addresses() -> list[tuple[str, str, int]]:
    """(ifname, address, prefixlen) of every IPv4 address in the root namespace."""
    result: list[tuple[str, str, int]] = []
    for link in ip_json("-4", "address", "show"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                result.append((link["ifname"], info["local"], int(info["prefixlen"])))
    return result


# --- processes ------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone; reap it
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return False
    except (OSError, IndexError):
        return False
    return True


def pid_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [p.decode(errors="replace") for p in f.read().split(b"\0") if p]
    except OSError:
        return []


def terminate_pids(pids: Iterable[int], timeout: float = 5.0) -> None:
    """SIGTERM the given PIDs, wait (bounded), then SIGKILL the survivors."""
    targets = {p for p in pids if p > 1 and p != os.getpid()}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in list(targets):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                targets.discard(pid)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 2.0)
        while targets and time.monotonic() < deadline:
            targets = {p for p in targets if pid_alive(p)}
            if targets:
                time.sleep(0.05)
        if not targets:
            return


def kill_namespace_processes(ns: str, timeout: float = 5.0) -> None:
    """Kill every process living in namespace ns (QEMU guests included), by PID."""
    for _ in range(3):  # processes may fork while we kill; look again
        pids = namespace_pids(ns)
        if not pids:
            return
        terminate_pids(pids, timeout=timeout)
