"""One SSH connection and one long-lived host agent, and the request/answer exchange with it.

The dynamic provider serves several operations at once, so each request/answer pair has the
session to itself; link deletes that wait for it leave together, as one request. The SSH
connection is made in ssh.py, the agent shipped by bootstrap.py, and one session per host is
kept by registry.py.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .bootstrap import agent_command, agent_sources
from .errors import AgentCallError, HostError
from .settings import HostSettings
from .ssh import connect

BATCH_LINGER = 0.0005  # seconds a batch waits for more callers; a link delete costs ~16 ms


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
        self.client = connect(settings)
        self._next_id = 0
        transport = self.client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        self.channel = transport.open_session(timeout=settings.connect_timeout)
        self.channel.exec_command(agent_command(settings))
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
            raise HostError(f"{self.settings.label}: connection lost during {op}: {exc}") from None
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


__all__ = ["AgentCallError", "AgentSession", "HostError"]
