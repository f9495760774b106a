"""The session keeper's rules, without a host: its idle end, its socket, its config."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kvmnet_provider.connection import keeper
from kvmnet_provider.errors import ConfigError
from kvmnet_provider.resources.base import keep_seconds


class StubSession:
    """What a keeper uses of its AgentSession: alive, the agent's pid, exchange, close."""

    def __init__(self) -> None:
        self.alive = True
        self.agent_pid = 4242

    def exchange(self, op: str, args: dict[str, object], timeout: float) -> dict[str, object]:
        return {"id": 99, "ok": True, "result": {"op": op}}

    def close(self) -> None:
        self.alive = False


def serve(tmp_path: Path, idle: float) -> tuple[StubSession, threading.Thread, str]:
    path = str(tmp_path / "k.sock")
    listener = keeper.listen(path)
    assert listener is not None
    session = StubSession()
    thread = threading.Thread(
        target=keeper.Keeper(session, listener, idle).serve,
        daemon=True,  # type: ignore[arg-type]
    )
    thread.start()
    return session, thread, path


def test_a_keeper_without_clients_ends_after_its_idle_time(tmp_path: Path) -> None:
    _, thread, _ = serve(tmp_path, idle=0.3)
    thread.join(3.0)
    assert not thread.is_alive()


def test_a_client_keeps_it_and_gets_answers_under_its_own_ids(tmp_path: Path) -> None:
    _, thread, path = serve(tmp_path, idle=0.3)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    lines = client.makefile("r")
    assert lines.readline().strip() == '{"hello": {"pid": 4242}}'
    client.sendall(b'{"id": 7, "op": "ping", "args": {}}\n')
    assert lines.readline().strip() == '{"id": 7, "ok": true, "result": {"op": "ping"}}'
    time.sleep(1.0)
    assert thread.is_alive()  # a client is connected: not idle
    lines.close()
    client.close()
    thread.join(3.0)
    assert not thread.is_alive()


def test_a_keeper_ends_when_its_session_is_lost(tmp_path: Path) -> None:
    session, thread, _ = serve(tmp_path, idle=60)
    session.alive = False
    thread.join(3.0)
    assert not thread.is_alive()


def test_a_second_keeper_leaves_a_live_ones_socket_alone(tmp_path: Path) -> None:
    _, thread, path = serve(tmp_path, idle=1.0)
    assert keeper.listen(path) is None
    thread.join(5.0)
    stale = keeper.listen(path)  # no keeper answers there any more: the file is taken over
    assert stale is not None
    stale.close()


@pytest.mark.parametrize(
    ("raw", "seconds"), [(None, 0.0), ("0", 0.0), ("60", 60.0), (3600, 3600.0)]
)
def test_keep_sessions_takes_whole_seconds(raw: object, seconds: float) -> None:
    assert keep_seconds(raw) == seconds


@pytest.mark.parametrize("raw", ["-1", "1.5", "3601", "soon", True])
def test_keep_sessions_refuses_anything_else_naming_the_key(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"^kvmnet:keepSessions: must be a whole number"):
        keep_seconds(raw)


def test_the_provider_loads_paramiko_only_to_connect_itself() -> None:
    """With kept sessions the keeper connects: the provider process never needs paramiko."""
    probe = "import sys, kvmnet_provider.resources; print('paramiko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
