"""Where the agent's own SSH session arrived and where it comes from: what the firewall's
guard (a DNAT must not capture sshd) and the links' guard (a bridge's subnet must not swallow
the operator's address) both protect.

Two sources, and the union of both is taken:
- /proc: the agent's nearest ancestor that is sshd (`sshd`, or `sshd-session` from OpenSSH
  9.8 on) holds the session's TCP socket. Its socket inodes are looked up in that process's
  own /proc/PID/net/tcp{,6} (its network namespace), keeping established connections on a
  port the namespace listens on (not a channel sshd opened to elsewhere). This is what works
  under `sudo`, which resets the environment by default, and it needs nothing from the
  provider.
- SSH_CONNECTION (`client-ip client-port server-ip server-port`), which sshd sets for the
  session: there when the agent runs as the login user or sudo keeps it, and /proc may be
  closed to the agent (hidepid) or its ancestor renamed.

The local end (address and port sshd accepted on) is an Endpoint; the far end is the peer's
address as the host sees it, after any NAT on the way: where the host's replies go.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SSHD_NAMES = ("sshd", "sshd-session")
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"
MAX_ANCESTORS = 32


@dataclass(frozen=True, order=True)
class Endpoint:
    """Where an SSH session arrived: the host's address and sshd's port."""

    address: str
    port: int


def _address(text: str) -> str:
    """An address as ipaddress prints it; IPv4-mapped IPv6 as IPv4; no zone."""
    addr = ipaddress.ip_address(text.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def connection_of(env: Mapping[str, str]) -> set[Connection]:
    """The session SSH_CONNECTION names, if it names one."""
    fields = env.get("SSH_CONNECTION", "").split()
    if len(fields) != 4:
        return set()
    try:
        return {Connection(Endpoint(_address(fields[2]), int(fields[3])), _address(fields[0]))}
    except ValueError:
        return set()


def _hex_address(text: str) -> str:
    """/proc/net/tcp{,6}'s address: 32-bit words in %08X of the host's byte order."""
    raw = b"".join(
        int(text[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8)
    )
    return _address(str(ipaddress.ip_address(raw)))


@dataclass(frozen=True, order=True)
class Connection:
    """One established session: where it arrived, and the peer's address."""

    local: Endpoint
    peer: str


def parse_proc_net(text: str) -> tuple[list[tuple[Connection, int]], set[int]]:
    """(established sockets as (connection, inode), listening ports) of a /proc/net/tcp or
    tcp6 text."""
    established: list[tuple[Connection, int]] = []
    listening: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        address, _, port = fields[1].partition(":")
        if fields[3] == TCP_LISTEN:
            listening.add(int(port, 16))
        elif fields[3] == TCP_ESTABLISHED:
            local = Endpoint(_hex_address(address), int(port, 16))
            peer = _hex_address(fields[2].partition(":")[0])
            established.append((Connection(local, peer), int(fields[9])))
    return established, listening


def connections_in(tables: Iterable[str], inodes: set[int]) -> set[Connection]:
    """The established sockets `inodes` on a listening port, with their peers."""
    established: list[tuple[Connection, int]] = []
    listening: set[int] = set()
    for text in tables:
        found, ports = parse_proc_net(text)
        established += found
        listening |= ports
    return {conn for conn, inode in established if inode in inodes and conn.local.port in listening}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def sshd_ancestor(pid: int) -> int | None:
    """The nearest process above `pid` (itself included) that is sshd, or None."""
    for _ in range(MAX_ANCESTORS):
        if pid <= 1:
            return None
        if _read(f"/proc/{pid}/comm").strip() in SSHD_NAMES:
            return pid
        stat = _read(f"/proc/{pid}/stat")
        try:
            pid = int(stat.rpartition(")")[2].split()[1])  # after the comm: state, ppid
        except (IndexError, ValueError):
            return None
    return None


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def connections_from_proc(pid: int | None = None) -> set[Connection]:
    sshd = sshd_ancestor(os.getpid() if pid is None else pid)
    if sshd is None:
        return set()
    tables = (_read(f"/proc/{sshd}/net/{name}") for name in ("tcp", "tcp6"))
    return connections_in(tables, _socket_inodes(sshd))


@functools.cache  # an agent serves one session all its life
def session_connections() -> frozenset[Connection]:
    """This agent's SSH sessions (empty when it was not started by sshd)."""
    return frozenset(connections_from_proc() | connection_of(os.environ))


def session_endpoints() -> frozenset[Endpoint]:
    """Where this agent's SSH session arrived."""
    return frozenset(conn.local for conn in session_connections())


def session_peers() -> frozenset[str]:
    """The addresses this agent's SSH session comes from."""
    return frozenset(conn.peer for conn in session_connections())
