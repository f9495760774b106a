"""A provider process's side of kept sessions (`kvmnet:keepSessions`; see keeper.py).

The session to a host is asked of the host's keeper, over a Unix socket in a directory only
this user can enter; when no keeper answers there, one is started (it connects, then says
ready or why not) and asked again. What comes back behaves as an AgentSession: the same
requests, ids, batching and timeouts, over the socket instead of an SSH channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import select
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import credentials
from .bootstrap import agent_bundle
from .errors import HostError
from .session import AgentSession
from .settings import HostSettings

PROTOCOL = 1  # of keeper.py; a keeper of another protocol or agent code is never asked
KEEPER_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "SSH_AUTH_SOCK")  # nothing else reaches it
START_GRACE = 60.0  # seconds a keeper may take to say ready, beyond the connect timeout
SOCKET_ROOM = 107 - len("/kvmnet-keep-4294967295/") - 24 - len(".sock")  # for the base dir


def keeper_dir() -> Path:
    """This user's directory of keeper sockets: made 0700, and refused unless it is a real
    directory of this user's with that mode (like OpenSSH's ControlPath directory)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or ""
    if not base or len(base) > SOCKET_ROOM:  # a socket's path has 107 bytes at most
        base = tempfile.gettempdir()
    path = Path(base) / f"kvmnet-keep-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise HostError(f"{path}: not a private directory of uid {os.geteuid()}; remove it")
    return path


def socket_path(settings: HostSettings) -> Path:
    """One keeper per host settings, credentials, agent code and protocol. The credentials
    enter through a keyed hash whose key never leaves the directory, so no name can be used
    to guess them."""
    directory = keeper_dir()
    salt_file = directory / "salt"
    if not salt_file.exists():  # written whole, then linked: a reader never sees half of it
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(tmp, salt_file)
        except FileExistsError:
            pass  # another process's came first: that one is the salt
        finally:
            os.unlink(tmp)
    salt = salt_file.read_bytes()
    key, password, _ = _credentials(settings)
    secret = hmac.new(salt, json.dumps([key, password]).encode(), hashlib.sha256).hexdigest()
    name = json.dumps([PROTOCOL, agent_bundle()[0], settings.to_props(), secret], sort_keys=True)
    return directory / (hashlib.sha256(name.encode()).hexdigest()[:24] + ".sock")


def _credentials(settings: HostSettings) -> tuple[str | None, str | None, str]:
    try:
        return credentials.for_host(settings.host, settings.port)
    except ValueError as exc:  # the stack's credentials config is unusable: it says why
        raise HostError(f"{settings.label}: {exc}") from None


def kept_session(settings: HostSettings, idle: float) -> KeptSession:
    path = socket_path(settings)
    try:
        return KeptSession(settings, _connect(path))
    except (FileNotFoundError, ConnectionRefusedError):
        pass  # no keeper, or one that died: start one
    except OSError as exc:
        raise HostError(f"{settings.label}: the session keeper at {path}: {exc}") from None
    start_keeper(settings, path, idle)
    try:
        return KeptSession(settings, _connect(path))
    except OSError as exc:
        raise HostError(f"{settings.label}: the session keeper at {path} is gone: {exc}") from None


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


def start_keeper(settings: HostSettings, path: Path, idle: float) -> None:
    """Start the keeper of `path` and wait for its word: ready, or why it could not connect
    (the one line a direct connection would have given)."""
    key, password, source = _credentials(settings)
    order = {
        "settings": settings.to_props(),
        "credentials": [key, password, source],
        "socket": str(path),
        "idle": idle,
    }
    log_fd = os.open(path.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvmnet_provider.connection.keeper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            cwd="/",
            env={k: v for k, v in os.environ.items() if k in KEEPER_ENV},
            start_new_session=True,  # the engine ending its provider does not end the keeper
        )
    finally:
        os.close(log_fd)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write((json.dumps(order) + "\n").encode())
        proc.stdin.close()
        word = _read_word(proc.stdout, settings.connect_timeout + START_GRACE)
    finally:
        proc.stdout.close()
        proc.wait()  # the keeper forked away at once: this is its launcher
    if word.get("error"):
        raise HostError(str(word["error"]))
    if not word.get("ready"):
        raise HostError(
            f"{settings.label}: the session keeper did not start (see {path.with_suffix('.log')})"
        )


def _read_word(stream: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            return {}
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            return {}
        data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


class SocketChannel:
    """What AgentSession uses of a paramiko channel, its client and transport, on a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def settimeout(self, timeout: float) -> None:
        self.sock.settimeout(timeout)

    def exit_status_ready(self) -> bool:
        return False

    def is_active(self) -> bool:
        return not self.closed

    def get_transport(self) -> SocketChannel:
        return self

    def write(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


class KeptSession(AgentSession):
    """An AgentSession whose agent a keeper holds: requests go over the keeper's socket."""

    def __init__(self, settings: HostSettings, sock: socket.socket) -> None:
        self._init_state(settings)
        channel = SocketChannel(sock)
        self.channel = self.client = self.stdin = channel  # type: ignore[assignment]
        sock.settimeout(max(30.0, settings.connect_timeout))
        hello = _read_line(sock)
        if not hello:
            channel.close()
            raise ConnectionRefusedError("the keeper closed before its hello")
        self.agent_pid = json.loads(hello).get("hello", {}).get("pid")
        self._start_reader()

    def _deliver(self, answer: object) -> None:
        if isinstance(answer, dict) and "lost" in answer:  # the keeper's session could not
            with self._turn:
                waiter = self._waiters.pop(answer.get("id"), None)  # type: ignore[arg-type]
            if waiter is not None:
                waiter.error = HostError(str(answer["lost"]))
                waiter.done.set()
            return
        super()._deliver(answer)


def _read_line(sock: socket.socket) -> bytes:
    """One line, read a byte at a time: what follows it belongs to the reader thread."""
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            return b""
        line += byte
    return line
