"""The session keeper: one host's agent session, kept open between Pulumi commands.

Every `pulumi` command starts a new provider process, and each of its hosts costs an SSH
handshake, a login, a Python start on the host and the agent's first imports, paid again by
every command. With `kvmnet:keepSessions` set to N seconds, a provider process does
not connect to a host itself: it asks this keeper, a detached process of the same local user,
started by the first command, which holds the connection and the agent, and ends N seconds
after its last client left, or as soon as its connection is lost. It is OpenSSH's
ControlPersist for kvmnet's agent.

The keeper listens on a Unix socket in a 0700 directory of the user's (kept.py names it),
accepts only peers of its own uid, and speaks the agent's own line protocol: after a hello
({"hello": {"pid": AGENT_PID}}), each request line is sent on to the agent and its answer sent
back under the client's id; a request the session could not carry is answered
{"id": ID, "lost": "one line naming the host"}.

Started as `python -m kvmnet_provider.connection.keeper` with one JSON line on stdin (the host
settings, this host's credentials, the socket path, the idle time); it answers one line on
stdout, {"ready": true} or {"error": "one line"}, and detaches. Secrets travel on that pipe
only: never in argv, the environment, or a file.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

from . import credentials
from .errors import HostError
from .session import AgentSession
from .settings import HostSettings

AGENT_WAIT = 24 * 3600.0  # a client times its own requests out; the keeper waits for the agent
TICK = 0.5  # seconds between checks of the idle time and the session


class Keeper:
    def __init__(self, session: AgentSession, listener: socket.socket, idle: float) -> None:
        self.session = session
        self.listener = listener
        self.idle = idle
        self._lock = threading.Lock()
        self._clients = 0
        self._in_flight = 0
        self._last = time.monotonic()

    def serve(self) -> None:
        """Accept clients until idle for `idle` seconds with none, or the session is lost."""
        self.listener.settimeout(TICK)
        while self.session.alive:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                with self._lock:
                    quiet = not self._clients and not self._in_flight
                    if quiet and time.monotonic() - self._last > self.idle:
                        return
                continue
            if _peer_uid(conn) != os.geteuid():
                conn.close()  # the directory is private already; this says so again
                continue
            with self._lock:
                self._clients += 1
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()
        stream = conn.makefile("rb")
        try:
            _send(conn, send_lock, {"hello": {"pid": self.session.agent_pid}})
            for line in stream:
                if line.strip():
                    request = json.loads(line)
                    with self._lock:
                        self._in_flight += 1
                    threading.Thread(
                        target=self._forward, args=(conn, send_lock, request), daemon=True
                    ).start()
        except (OSError, ValueError):
            pass  # the client went away, or spoke nonsense: it is dropped
        finally:
            stream.close()
            conn.close()
            with self._lock:
                self._clients -= 1
                self._last = time.monotonic()

    def _forward(self, conn: socket.socket, send_lock: threading.Lock, request: Any) -> None:
        try:
            rid = request["id"]
            try:
                answer = self.session.exchange(request["op"], request.get("args") or {}, AGENT_WAIT)
                reply = {**answer, "id": rid}
            except HostError as exc:
                reply = {"id": rid, "lost": str(exc)}
            _send(conn, send_lock, reply)
        except (OSError, KeyError, TypeError):
            pass  # its client is gone, or the request was not one
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last = time.monotonic()


def _send(conn: socket.socket, lock: threading.Lock, message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    with lock:
        conn.sendall(data)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def listen(path: str) -> socket.socket | None:
    """A socket bound at `path`, mode 0600 from the start (umask), replacing one that no
    keeper answers on; None when another keeper, started meanwhile, already serves it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        try:
            listener.bind(path)
        except OSError:
            if _answers(path):
                listener.close()
                return None
            os.unlink(path)  # left by a keeper that died
            listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    return listener


def main(stdin: BinaryIO, stdout: BinaryIO) -> int:
    order = json.loads(stdin.readline())

    def answer(message: dict[str, Any]) -> None:
        stdout.write((json.dumps(message) + "\n").encode())
        stdout.flush()

    settings = HostSettings.from_props(order["settings"])
    credentials.pin(settings.host, settings.port, *order["credentials"])
    path = order["socket"]
    listener = listen(path)
    if listener is None:
        answer({"ready": True})  # the other keeper serves this host
        return 0
    bound = os.stat(path).st_ino
    try:
        try:
            session = AgentSession(settings)
        except HostError as exc:
            answer({"error": str(exc)})
            return 1
        answer({"ready": True})
        for stream in (stdin, stdout):
            stream.close()
        try:
            Keeper(session, listener, float(order["idle"])).serve()
        finally:
            session.close()
    finally:
        try:
            if os.stat(path).st_ino == bound:  # still ours: a new keeper may have replaced it
                os.unlink(path)
        except OSError:
            pass
        listener.close()
        _drop_empty(path[: -len(".sock")] + ".log")
    return 0


def _drop_empty(log: str) -> None:
    """The keeper's stderr file, gone when it says nothing (tracebacks of bugs stay)."""
    try:
        if os.stat(log).st_size == 0:
            os.unlink(log)
    except OSError:
        pass


if __name__ == "__main__":
    # Detached: a new session (the caller's start_new_session) and no parent to reap it.
    if os.fork() > 0:
        os._exit(0)
    sys.exit(main(sys.stdin.buffer, sys.stdout.buffer))
