"""One SSH connection and one long-lived host agent per host, shared by all operations.

The dynamic provider serves several operations at once, so sessions are created under a
lock and each request/answer pair has the session to itself; link deletes that wait for it
leave together, as one request. Nothing here is pickled: the cache is module state of the
installed package, alive for the provider process.
"""

from __future__ import annotations

import base64
import collections
import json
import shlex
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from . import credentials, framing
from .settings import HostSettings
from .tcp import open_tcp

AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"
BATCH_LINGER = 0.0005  # seconds a batch waits for more callers; a link delete costs ~16 ms

# Runs on the host as `python -I -S -u -c BOOTSTRAP MARKER` from `/`: a constant and a random
# marker, never built from user input. See hostboot.py.
BOOTSTRAP = (Path(__file__).resolve().parent / "hostboot.py").read_text()


RETRY_HINT = "; run it again: what it began is found again by its owner mark"


class HostError(RuntimeError):
    """One line naming the host and the cause; never carries key material."""


def agent_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(AGENT_DIR.glob("*.py"))}


def _trust_hint(s: HostSettings) -> str:
    target = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
    where = s.known_hosts or "~/.ssh/known_hosts"
    return (
        f"verify the host's fingerprint, then add it to {where} "
        f"(ssh-keyscan -p {s.port} {s.host} >> {where}) or pin it with connection.host_key; "
        f"entry name {target}"
    )


def _connect(s: HostSettings) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if s.insecure_accept_any_host_key:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    else:
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        known = Path(s.known_hosts) if s.known_hosts else Path.home() / ".ssh" / "known_hosts"
        if not s.host_key and known.exists():
            client.load_host_keys(str(known))
        if s.host_key:
            key_type, blob = s.host_key.split()[:2]
            entry = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
            client.get_host_keys().add(
                entry,
                key_type,
                paramiko.PKey.from_type_string(key_type, base64.b64decode(blob)),
            )
    kwargs: dict[str, Any] = {
        "hostname": s.host,
        "port": s.port,
        "username": s.user,
        "timeout": s.connect_timeout,
        "banner_timeout": s.connect_timeout,
        "auth_timeout": s.connect_timeout,
        "look_for_keys": False,
        "allow_agent": bool(s.allow_agent),
    }
    try:
        pkey = credentials.configured_key(s.host, s.port)  # this host's, never another's
    except ValueError as exc:
        raise HostError(f"{s.label}: {exc}") from None
    if pkey is not None:
        kwargs["pkey"] = pkey
    elif s.private_key_path:
        kwargs["key_filename"] = s.private_key_path
    password = credentials.configured_password(s.host, s.port)
    # A host whose key was not checked may be anyone: it gets no password to replay.
    if password and not s.insecure_accept_any_host_key:
        kwargs["password"] = password
    try:
        kwargs["sock"] = open_tcp(s.host, s.port, s.connect_timeout)
        client.connect(**kwargs)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostError(
            f"{s.label}: host key CHANGED (got {exc.key.get_name()} {exc.key.fingerprint}); "
            "refusing to connect. If the host was reinstalled, remove the old entry and "
            + _trust_hint(s)
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        source = (
            "config " + credentials.key_source(s.host, s.port)
            if pkey is not None
            else f"key file {s.private_key_path}"
            if s.private_key_path
            else "ssh-agent/password"
        )
        raise HostError(f"{s.label}: authentication refused (credentials from {source})") from None
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise HostError(
                f"{s.label}: host key unknown; refusing to connect: {_trust_hint(s)}"
            ) from None
        raise HostError(f"{s.label}: SSH failed: {exc}") from None
    except EOFError:  # paramiko's transport saw the socket close (a reset mid-handshake)
        client.close()
        raise HostError(
            f"{s.label}: the connection closed during the SSH handshake (is an SSH server "
            "listening there, and accepting this client?)"
        ) from None
    except TimeoutError:
        client.close()
        raise HostError(
            f"{s.label}: timed out after {s.connect_timeout:g} s (is the host up and the address "
            "right? connection.connect_timeout sets the wait)"
        ) from None
    except (OSError, paramiko.ssh_exception.NoValidConnectionsError) as exc:
        client.close()
        raise HostError(
            f"{s.label}: unreachable: {exc.strerror or exc} (is sshd running there, on "
            "connection.port?)"
        ) from None
    return client


@dataclass
class _Pending:
    """One caller's request in a batch, and what came back for it."""

    args: dict[str, Any]
    answer: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = None
    done: bool = False


class AgentSession:
    def __init__(self, settings: HostSettings) -> None:
        self.settings = settings
        self._turn = threading.Condition()  # guards _busy and _queued
        self._busy = False
        self._queued: dict[str, list[_Pending]] = {}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.preamble: list[str] = []  # what the login shell printed before the agent
        self.client = _connect(settings)
        self._next_id = 0
        transport = self.client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        self.channel = transport.open_session(timeout=settings.connect_timeout)
        marker = framing.new_marker()
        python = f"{shlex.quote(settings.python)} -I -S -u -c {shlex.quote(BOOTSTRAP)} {marker}"
        command = f"cd / && exec sudo -n -- {python}" if settings.sudo else f"cd / && exec {python}"
        self.channel.exec_command(command)
        self.stdin = self.channel.makefile_stdin("w")
        self.stdout = self.channel.makefile("r")
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.channel.settimeout(max(30.0, settings.connect_timeout))
        try:
            try:
                self.stdin.write(json.dumps(agent_sources()) + "\n")
                self.stdin.flush()
            except (OSError, EOFError):
                pass  # the Python died before reading (not found, not executable...): say why
            try:
                self.preamble = framing.skip_preamble(self.stdout, marker, settings.label)
            except TimeoutError:
                pass  # the read below says so
            hello = self._read_line("starting the host agent")
        except HostError:
            self.close()
            raise
        info = hello.get("hello", {})
        if info.get("missing"):
            self.close()
            raise HostError(
                f"{settings.label}: the host lacks what kvmnet needs: " + "; ".join(info["missing"])
            )
        self.agent_pid = info.get("pid")

    def _drain_stderr(self) -> None:
        try:
            for line in self.channel.makefile_stderr("r"):
                self.stderr_tail.append(str(line).rstrip())
        except (TimeoutError, OSError, EOFError):
            pass

    def _read_line(self, doing: str) -> dict[str, Any]:
        try:
            line = self.stdout.readline()
        except TimeoutError:
            raise HostError(
                f"{self.settings.label}: no answer from the host agent while {doing}"
            ) from None
        if not line:
            tail = " | ".join(list(self.stderr_tail)[-3:]) or "no output"
            raise HostError(
                f"{self.settings.label}: the host agent ({self.settings.python}) "
                f"exited while {doing}: {tail}"
                + ("" if doing.startswith("starting") else RETRY_HINT)
            )
        result: dict[str, Any] = json.loads(line)
        return result

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return bool(
            transport
            and transport.is_active()
            and not self.channel.closed
            and not self.channel.exit_status_ready()
        )

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The session to oneself: one request and its answer at a time."""
        with self._turn:
            while self._busy:
                self._turn.wait()
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._turn:
            self._busy = False
            self._turn.notify_all()

    def call(self, op: str, args: dict[str, Any], timeout: float = 120.0) -> Any:
        with self.exclusive():
            answer = self._exchange(op, args, timeout)
        return self._result(answer)

    def call_batched(self, op: str, args: dict[str, Any], timeout: float = 120.0) -> Any:
        """`op`, sent together with the same op of the other threads waiting for this
        session as one `<op>.many` request. The engine deletes a network's taps four at a
        time, and the host unregisters a batch of links for about the cost of one.

        A caller queues its request; while the session is busy it waits, and the next
        caller to get the session takes everything queued along."""
        mine = _Pending(args)
        with self._turn:
            self._queued.setdefault(op, []).append(mine)
            while self._busy and not mine.done:
                self._turn.wait()
            lead = not mine.done
            if lead:
                self._busy = True
        if lead:
            self._lead_batch(op, timeout)
        if mine.error is not None:
            raise mine.error
        return self._result(mine.answer)

    def _lead_batch(self, op: str, timeout: float) -> None:
        try:
            # Let the callers that the last answer set free queue their next request before
            # this batch leaves; without it, batches of one and of several alternate.
            time.sleep(BATCH_LINGER)
            with self._turn:
                batch = self._queued.pop(op)
            self._run_batch(op, batch, timeout)
        finally:
            self._release()

    def _run_batch(self, op: str, batch: list[_Pending], timeout: float) -> None:
        try:
            if len(batch) == 1:
                batch[0].answer = self._exchange(op, batch[0].args, timeout)
            else:
                answer = self._exchange(f"{op}.many", {"items": [p.args for p in batch]}, timeout)
                for pending, item in zip(batch, self._result(answer), strict=True):
                    pending.answer = item
        except Exception as exc:  # the batch failed as a whole: each of its callers hears it
            for pending in batch:
                pending.error = exc
        finally:
            for pending in batch:
                pending.done = True

    def _exchange(self, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request and its answer; the caller has the session exclusively."""
        self._next_id += 1
        rid = self._next_id
        try:
            self.channel.settimeout(timeout)
            self.stdin.write(json.dumps({"id": rid, "op": op, "args": args}) + "\n")
            self.stdin.flush()
            answer = self._read_line(op)
        except (OSError, EOFError) as exc:
            self.close()
            raise HostError(
                f"{self.settings.label}: connection lost during {op}: {exc}{RETRY_HINT}"
            ) from None
        except HostError:
            self.close()
            raise
        if answer.get("id") != rid:
            self.close()
            raise HostError(f"{self.settings.label}: the host agent answered out of turn")
        return answer

    def _result(self, answer: dict[str, Any]) -> Any:
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise AgentCallError(
                self.settings.label, str(error.get("kind")), str(error.get("message"))
            )
        return answer.get("result")

    def close(self) -> None:
        try:
            self.channel.close()
        finally:
            self.client.close()


class AgentCallError(HostError):
    def __init__(self, label: str, kind: str, message: str) -> None:
        super().__init__(f"{label}: {message}")
        self.kind = kind


_sessions: dict[HostSettings, AgentSession] = {}
_sessions_lock = threading.Lock()
_host_locks: dict[HostSettings, threading.Lock] = {}


def agent_session(settings: HostSettings) -> AgentSession:
    """The live session for these settings, connecting (once, even under concurrency)."""
    with _sessions_lock:
        host_lock = _host_locks.setdefault(settings, threading.Lock())
    with host_lock:
        session = _sessions.get(settings)
        if session is not None and session.alive:
            return session
        session = AgentSession(settings)
        _sessions[settings] = session
        return session


def fresh_session(settings: HostSettings) -> AgentSession:
    """A session on a NEW connection (proof that the host is reachable right now), which
    then replaces the cached one for these settings."""
    session = AgentSession(settings)
    with _sessions_lock:
        old = _sessions.get(settings)
        _sessions[settings] = session
    if old is not None:
        try:
            old.close()
        except Exception:
            pass  # it may already be dead: that is why we are here
    return session


def close_all() -> None:
    with _sessions_lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for session in sessions:
        session.close()
