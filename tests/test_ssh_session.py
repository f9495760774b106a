"""The agent's own SSH session, and the port forwards that would capture it (pure, plus this
machine's own /proc for a real socket; no firewall is touched)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest

from kvmnet_provider.agent import ssh_session
from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.agent.firewall import plan, session_guard
from kvmnet_provider.agent.firewall.session_guard import captures
from kvmnet_provider.agent.ssh_session import Connection, Endpoint

SESSION = Endpoint("10.0.0.2", 22)


def local(connections: set[Connection]) -> set[Endpoint]:
    """Where each session arrived."""
    return {c.local for c in connections}
SPEC = {"owner": "kvt/dev/PortForward/pf", "host_port": 22, "guest_address": "10.0.1.11",
        "guest_port": 22}  # fmt: skip


def want(**extra: object) -> dict[str, object]:
    return plan.dnat_want({**SPEC, **extra})[1]


@pytest.mark.parametrize(
    "rule, caught",
    [
        (want(), True),  # dst-type LOCAL: every address of the host, the session's too
        (want(destination="10.0.0.2"), True),  # the session's own address
        (want(in_interface="eth1"), True),  # the next login may come in elsewhere
        (want(destination="10.0.0.3"), False),  # another address of the host
        (want(host_port=2222), False),
        (want(protocol="udp"), False),
    ],
)
def test_a_dnat_captures_the_session_by_protocol_port_and_destination(
    rule: dict[str, object], caught: bool
) -> None:
    assert captures(rule, SESSION) is caught


def test_a_session_over_ipv6_is_not_caught_by_the_ipv4_rules() -> None:
    assert not captures(want(), Endpoint("2001:db8::2", 22))


def test_the_refusal_is_one_line_naming_port_address_and_fix() -> None:
    with pytest.raises(AgentError) as caught:
        session_guard.refuse_capture(want(destination="10.0.0.2"), [SESSION])
    message = caught.value.message
    assert caught.value.kind == "invalid" and "\n" not in message
    assert "tcp/22" in message and "10.0.0.2:22" in message
    assert "pick another host_port" in message
    session_guard.refuse_capture(want(host_port=2222), [SESSION])  # passes
    session_guard.refuse_capture(want(), [])  # not started by sshd: nothing to protect


@pytest.mark.parametrize(
    "value, found",
    [
        ("192.0.2.7 51234 10.0.0.2 22", {SESSION}),
        ("2001:db8::7 51234 ::ffff:10.0.0.2 2222", {Endpoint("10.0.0.2", 2222)}),
        ("fe80::7 51234 fe80::2%eth0 22", {Endpoint("fe80::2", 22)}),
        ("", set()),
        ("garbage", set()),
    ],
)
def test_ssh_connection_names_the_server_end(value: str, found: set[Endpoint]) -> None:
    assert local(ssh_session.connection_of({"SSH_CONNECTION": value})) == found


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0200000A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1
   1: 0200000A:0016 0100000A:C822 01 00000000:00000000 02:000A7A0C 00000000     0        0 101 4
   2: 0200000A:A000 0500000A:1538 01 00000000:00000000 02:000A7A0C 00000000     0        0 102 4
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 0000000000000000FFFF00000200000A:0016 0000000000000000FFFF00000100000A:C823 01 0:0 0:0 0 0 0 103 1
"""  # noqa: E501


@pytest.mark.skipif(sys.byteorder != "little", reason="the samples are a little-endian host's")
def test_proc_net_keeps_established_sockets_of_the_session_on_a_listening_port() -> None:
    # 102 is a channel sshd opened from an ephemeral port: not where a session arrives
    found = local(ssh_session.connections_in([PROC_NET_TCP, PROC_NET_TCP6], {101, 102, 103}))
    assert found == {SESSION}  # 103 is the same, IPv4-mapped
    assert ssh_session.connections_in([PROC_NET_TCP], {999}) == set()
    peers = {c.peer for c in ssh_session.connections_in([PROC_NET_TCP, PROC_NET_TCP6], {101})}
    assert peers == {"10.0.0.1"}  # where the host's replies go: what a bridge must not take


def test_ssh_connection_names_the_peer_too() -> None:
    env = {"SSH_CONNECTION": "192.0.2.7 50022 192.0.2.9 22"}
    assert ssh_session.connection_of(env) == {Connection(Endpoint("192.0.2.9", 22), "192.0.2.7")}


@pytest.fixture()
def accepted() -> Iterator[tuple[socket.socket, int]]:
    """A connection accepted on a listening port of this machine, as sshd holds one."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    try:
        yield conn, server.getsockname()[1]
    finally:
        for s in (conn, client, server):
            s.close()


def test_a_real_accepted_socket_is_found_in_this_machines_proc(
    accepted: tuple[socket.socket, int],
) -> None:
    conn, port = accepted
    inode = os.fstat(conn.fileno()).st_ino
    tables = [open(f"/proc/self/net/{name}").read() for name in ("tcp", "tcp6")]
    assert local(ssh_session.connections_in(tables, {inode})) == {Endpoint("127.0.0.1", port)}


def test_no_sshd_above_a_process_means_no_session() -> None:
    assert ssh_session.sshd_ancestor(1) is None
    if ssh_session.sshd_ancestor(os.getpid()) is None:  # pytest run outside an SSH login
        assert ssh_session.connections_from_proc() == set()
