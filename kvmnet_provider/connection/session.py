"""One SSH connection and one long-lived host agent, and the request/answer exchange with it.

The dynamic provider serves several operations at once, and requests of several callers are
in flight on one session at once: each carries an id, the agent echoes it, and a reader thread
hands each answer to its caller. A guest stop that waits its power-down thus holds up no other
operation; link deletes that meet leave together, as one request. The SSH connection is made
in ssh.py, the agent shipped by bootstrap.py, and one session per host is kept by registry.py.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..spec.wire import (
    Answer,
    Args,
    ItemOutcome,
    parse_answer,
    parse_hello,
    parse_item,
    request,
)
from . import framing
from .bootstrap import agent_bundle, agent_command
from .errors import RETRY_HINT, AgentCallError, HostError
from .settings import HostSettings

BATCH_LINGER = 0.0005  # seconds a batch waits for more callers: far less than any request costs
PROBE_TIMEOUT = 10.0  # seconds a ping may take, after a caller's timeout, to show the agent lives


@dataclass
class _Pending:
    """One caller's request in a batch, and what came back for it."""

    args: Args
    answer: Answer | ItemOutcome | None = None
    error: Exception | None = None
    done: bool = False


@dataclass
class _Waiter:
    """One request in flight: the reader thread hands it its answer, matched by id."""

    op: str
    sent: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None
    error: Exception | None = None


class LineWriter:
    """The agent's stdin: each request goes to the channel whole, at once. Not paramiko's
    buffered file: one left holding bytes when the channel died would try to flush them
    again when the process exits, and print a traceback on the way."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def write(self, text: str) -> None:
        self.channel.sendall(text.encode())

    def flush(self) -> None:
        pass  # nothing is held back


class AgentSession:
    _stderr_thread: threading.Thread | None
    preamble: list[str]  # what the login shell printed before the agent

    def __init__(self, settings: HostSettings) -> None:
        from .ssh import connect  # paramiko: not loaded by a provider whose keeper connects

        self._init_state(settings)
        self.client = connect(settings)
        transport = self.client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        try:
            self.channel = transport.open_session(timeout=settings.connect_timeout)
        except Exception as exc:  # a slow sshd ("Timeout opening channel"): like a timeout
            self.client.close()
            raise HostError(f"{settings.label}: {exc}") from None
        marker = framing.new_marker()
        self.channel.exec_command(agent_command(settings, marker))
        self.stdin = LineWriter(self.channel)
        self.stdout = self.channel.makefile("r")
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        # Bounds each write (and the hello's read); the reader thread waits past it.
        self.channel.settimeout(max(30.0, settings.connect_timeout))
        digest, bundle = agent_bundle()
        try:
            self._send_line(json.dumps({"code": digest}))
            # What a chatty login shell printed comes first: skipped here, on this thread,
            # before the reader thread takes over the stream.
            try:
                self.preamble = framing.skip_preamble(self.stdout, marker, settings.label)
            except TimeoutError:
                pass  # the read below says so
            hello = self._read_line("starting the host agent")
            if hello.get("need") == digest:  # the host lacks this version of the agent
                self._send_line(bundle)
                hello = self._read_line("starting the host agent")
        except HostError:
            self.close()
            raise
        try:
            info = parse_hello(hello)
        except ValueError as exc:
            self.close()
            raise HostError(f"{settings.label}: {exc}") from None
        if info["missing"]:
            self.close()
            raise HostError(
                f"{settings.label}: the host lacks what kvmnet needs: " + "; ".join(info["missing"])
            )
        self.agent_pid = info["pid"]
        self.boot = info.get("boot", "")  # see agent/boot/unit.py's host_kind
        self._start_reader()

    def _init_state(self, settings: HostSettings) -> None:
        self.settings = settings
        self._turn = threading.Condition()  # guards everything below but the send lock
        self._held = False  # exclusive(): no new request leaves
        self._batching: set[str] = set()  # ops with a batch in flight
        self._queued: dict[str, list[_Pending]] = {}
        self._waiters: dict[int, _Waiter] = {}  # requests in flight, by id
        self._next_id = 0
        self._broken: Callable[[str], str] | None = None  # why no request can go out any more
        self._retiring = False
        self._send_lock = threading.Lock()  # one request line at a time
        self._stderr_thread = None
        self.late_answers = 0  # answers whose caller had given up waiting: dropped
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.preamble = []

    def _send_line(self, line: str) -> None:
        """A line of the agent's start; a write that fails is the agent's death, which the
        read after it explains."""
        try:
            self.stdin.write(line + "\n")
            self.stdin.flush()
        except (OSError, EOFError):
            pass  # the Python died before reading (not found, not executable...): say why

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

    def _start_reader(self) -> None:
        """From here on one thread reads every answer. The agent says nothing between its
        hello and the first request, so nothing is left in `stdout`'s buffer."""
        reader = threading.Thread(
            target=self._read_answers, name=f"kvmnet answers {self.settings.label}", daemon=True
        )
        reader.start()

    def _read_answers(self) -> None:
        """Hand each answer to the caller waiting for its id, until the agent's output ends."""
        buffered = bytearray()
        cause = None
        try:
            while True:
                try:
                    chunk = self.channel.recv(65536)
                except TimeoutError:
                    continue  # nothing to read for a while: the agent is busy or idle
                if not chunk:
                    break
                buffered += chunk
                while (end := buffered.find(b"\n")) >= 0:
                    line = bytes(buffered[:end])
                    del buffered[: end + 1]
                    if line.strip():
                        self._deliver(json.loads(line))
        except (OSError, EOFError, ValueError) as exc:
            cause = f"{exc.__class__.__name__}: {exc}"
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)  # the agent's last words say why it ended
        tail = cause or " | ".join(list(self.stderr_tail)[-3:]) or "no output"
        label, python = self.settings.label, self.settings.python
        self._fail_all(
            lambda op: f"{label}: the host agent ({python}) exited while {op}: {tail}{RETRY_HINT}"
        )

    def _deliver(self, line: object) -> None:
        answer = parse_answer(line)  # ValueError: the reader ends the session
        with self._turn:
            rid = answer["id"]
            waiter = self._waiters.pop(rid, None) if rid is not None else None
            if waiter is None:
                self.late_answers += 1  # its caller timed out: nobody wants it now
                return
            waiter.answer = answer
            waiter.done.set()

    def _fail_all(self, why: Callable[[str], str]) -> None:
        """No request can go out or come back any more: every caller waiting hears why (the
        first cause found is the one told)."""
        with self._turn:
            if self._broken is None:
                self._broken = why
            waiters = list(self._waiters.values())
            self._waiters.clear()
            for waiter in waiters:
                waiter.error = HostError(self._broken(waiter.op))
                waiter.done.set()
            self._turn.notify_all()

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return bool(
            transport
            and transport.is_active()
            and self._broken is None
            and not self._retiring
            and not self.channel.closed
            and not self.channel.exit_status_ready()
        )

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold back every new request of this session while the block runs (requests in
        flight carry on): callers line up behind it, as a busy session once made them."""
        with self._turn:
            while self._held:
                self._turn.wait()
            self._held = True
        try:
            yield
        finally:
            with self._turn:
                self._held = False
                self._turn.notify_all()

    def call(self, op: str, args: Args, timeout: float = 120.0) -> Any:
        return self._result(self._exchange(op, args, timeout))

    def call_batched(self, op: str, args: Args, timeout: float = 120.0) -> Any:
        """`op`, sent together with the same op of the other threads waiting for this
        session as one `<op>.many` request. The engine deletes a network's taps four at a
        time, and the host unregisters a batch of links for about the cost of one.

        A caller queues its request; while a batch of `op` is in flight it waits, and the
        next caller to lead takes everything queued along. Other ops go out meanwhile."""
        mine = _Pending(args)
        with self._turn:
            self._queued.setdefault(op, []).append(mine)
            while (self._held or op in self._batching) and not mine.done:
                self._turn.wait()
            lead = not mine.done
            if lead:
                self._batching.add(op)
        if lead:
            self._lead_batch(op, timeout)
        if mine.error is not None:
            raise mine.error
        assert mine.answer is not None  # a batch done without an error answered each caller
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
            with self._turn:
                self._batching.discard(op)
                self._turn.notify_all()
            self._close_if_retired()

    def _run_batch(self, op: str, batch: list[_Pending], timeout: float) -> None:
        try:
            if len(batch) == 1:
                batch[0].answer = self._exchange(op, batch[0].args, timeout)
            else:
                answer = self._exchange(f"{op}.many", {"items": [p.args for p in batch]}, timeout)
                for pending, item in zip(batch, self._result(answer), strict=True):
                    pending.answer = parse_item(item)
        except Exception as exc:  # the batch failed as a whole: each of its callers hears it
            for pending in batch:
                pending.error = exc
        finally:
            for pending in batch:
                pending.done = True

    def _exchange(self, op: str, args: Args, timeout: float, probe: bool = True) -> Answer:
        """One request and its answer. Other callers' requests may be in flight meanwhile:
        the agent answers each when it is done, and the answer finds its caller by id."""
        label = self.settings.label
        waiter = _Waiter(op)
        with self._turn:
            while self._held:
                self._turn.wait()
            if self._broken is not None:
                raise HostError(self._broken(op))
            self._next_id += 1
            rid = self._next_id
            self._waiters[rid] = waiter
        try:
            try:
                line = json.dumps(request(rid, op, args)) + "\n"
                with self._send_lock:
                    self.stdin.write(line)
                    self.stdin.flush()
                waiter.sent = True
            except (OSError, EOFError) as exc:  # a request may be half written: end it all
                lost = str(exc)  # (exc itself is unbound when the except block ends)
                self._fail_all(
                    lambda what: f"{label}: connection lost during {what}: {lost}{RETRY_HINT}"
                )
                self.close()
            if not waiter.done.wait(timeout):
                with self._turn:
                    self._waiters.pop(rid, None)  # its answer, should it come, is dropped
                if not waiter.done.is_set():
                    if probe:  # in the background: this caller hears its timeout now
                        threading.Thread(target=self._probe, args=(op,), daemon=True).start()
                    raise HostError(
                        f"{label}: no answer from the host agent while {op} (waited {timeout:g} s)"
                    )
        finally:
            self._close_if_retired()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.answer is not None  # done, without an error: the reader handed it over
        return waiter.answer

    def exchange(self, op: str, args: Args, timeout: float) -> Answer:
        """One request and the agent's whole answer (id, ok, result or error), as a session
        keeper forwards it: the keeper's client times the request out, not the keeper."""
        return self._exchange(op, args, timeout, probe=False)

    def _probe(self, op: str) -> None:
        """After a caller's timeout: does the agent still answer? A timeout of one operation
        is that caller's alone; a connection that no longer answers at all is closed, so
        the next caller connects anew and those still waiting hear it now."""
        try:
            self._exchange("ping", {}, PROBE_TIMEOUT, probe=False)
        except HostError:
            label = self.settings.label
            self._fail_all(
                lambda what: (
                    f"{label}: the host agent stopped answering (no answer while {op}"
                    f" nor to a ping); {what} abandoned"
                )
            )
            self.close()

    def _result(self, answer: Answer | ItemOutcome) -> Any:
        if not answer["ok"]:
            error = answer.get("error") or {"kind": "failed", "message": "no reason given"}
            raise AgentCallError(self.settings.label, error["kind"], error["message"])
        return answer.get("result")

    def retire(self) -> None:
        """Close once the requests in flight are answered: a session replaced by a new
        connection lets its callers finish."""
        with self._turn:
            self._retiring = True
        self._close_if_retired()

    def _close_if_retired(self) -> None:
        with self._turn:
            if not self._retiring or self._waiters or self._batching or self._queued:
                return
        self.close()

    def close(self) -> None:
        label = self.settings.label
        self._fail_all(lambda op: f"{label}: the session was closed during {op}")
        try:
            self.channel.close()
        finally:
            self.client.close()


__all__ = ["AgentCallError", "AgentSession", "HostError"]
