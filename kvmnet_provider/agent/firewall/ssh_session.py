"""The agent's own SSH session, and the port forwards that would capture it.

A DNAT of tcp/P to the host itself catches every new SSH login on P: kvmnet could no longer
reach the host, destroy included. The provider refuses host_port == connection.port at
preview, but it can only compare what the program says (a DNS name, a bastion or a NAT in
front of sshd passes); the agent sees where its session really arrived.

Where the session arrived (the address and port sshd accepted it on), from two sources, and
the union of both is protected:
- /proc: the agent's nearest ancestor that is sshd (`sshd`, or `sshd-session` from OpenSSH
  9.8 on) holds the session's TCP socket. Its socket inodes are looked up in that process's
  own /proc/PID/net/tcp{,6} (its network namespace), keeping established connections on a
  port the namespace listens on (not a channel sshd opened to elsewhere). This is what works
  under `sudo`, which resets the environment by default, and it needs nothing from the
  provider.
- SSH_CONNECTION (`client-ip client-port server-ip server-port`), which sshd sets for the
  session: there when the agent runs as the login user or sudo keeps it, and /proc may be
  closed to the agent (hidepid) or its ancestor renamed.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import AgentError

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


def from_environment(env: Mapping[str, str]) -> set[Endpoint]:
    fields = env.get("SSH_CONNECTION", "").split()
    if len(fields) != 4:
        return set()
    try:
        return {Endpoint(_address(fields[2]), int(fields[3]))}
    except ValueError:
        return set()


def _hex_address(text: str) -> str:
    """/proc/net/tcp{,6}'s address: 32-bit words in %08X of the host's byte order."""
    raw = b"".join(
        int(text[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8)
    )
    return _address(str(ipaddress.ip_address(raw)))


def parse_proc_net(text: str) -> tuple[list[tuple[Endpoint, int]], set[int]]:
    """(established sockets as (local endpoint, inode), listening ports) of a /proc/net/tcp
    or tcp6 text."""
    established: list[tuple[Endpoint, int]] = []
    listening: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        address, _, port = fields[1].partition(":")
        if fields[3] == TCP_LISTEN:
            listening.add(int(port, 16))
        elif fields[3] == TCP_ESTABLISHED:
            established.append((Endpoint(_hex_address(address), int(port, 16)), int(fields[9])))
    return established, listening


def sessions_in(tables: Iterable[str], inodes: set[int]) -> set[Endpoint]:
    """The local endpoints of the established sockets `inodes` on a listening port."""
    established: list[tuple[Endpoint, int]] = []
    listening: set[int] = set()
    for text in tables:
        found, ports = parse_proc_net(text)
        established += found
        listening |= ports
    return {end for end, inode in established if inode in inodes and end.port in listening}


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


def from_proc(pid: int | None = None) -> set[Endpoint]:
    sshd = sshd_ancestor(os.getpid() if pid is None else pid)
    if sshd is None:
        return set()
    tables = (_read(f"/proc/{sshd}/net/{name}") for name in ("tcp", "tcp6"))
    return sessions_in(tables, _socket_inodes(sshd))


@functools.cache
def session_endpoints() -> frozenset[Endpoint]:
    """Where this agent's SSH session arrived (empty when it was not started by sshd)."""
    return frozenset(from_proc() | from_environment(os.environ))


def captures(want: dict[str, Any], session: Endpoint) -> bool:
    """Whether a DNAT rule (plan.dnat_want's form) catches connections to `session`: tcp, the
    same port, and either any local address (no destination: `dst-type LOCAL`) or the
    session's own. The rules are IPv4: a session over IPv6 is not theirs to catch. An input
    interface does not spare it: the next login may come in through another one."""
    if want.get("protocol") != "tcp" or want.get("host_port") != session.port:
        return False
    address = ipaddress.ip_address(session.address)
    if address.version != 4:
        return False
    destination = want.get("destination")
    return destination is None or ipaddress.ip_address(destination) == address


def refuse_capture(want: dict[str, Any], sessions: Iterable[Endpoint] | None = None) -> None:
    """Raise the one-line refusal when the DNAT `want` would capture the agent's session."""
    for session in sorted(session_endpoints() if sessions is None else sessions):
        if captures(want, session):
            where = "every address of the host" if want.get("destination") is None else (
                session.address)  # fmt: skip
            raise AgentError(
                "invalid",
                f"host_port must not be {session.port}: a forward of tcp/{session.port} to "
                f"{where} would capture sshd, which kvmnet's session reached at "
                f"{session.address}:{session.port}, and cut kvmnet off the host (nothing was "
                f"changed); pick another host_port"
            )
