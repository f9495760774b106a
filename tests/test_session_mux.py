"""Several callers in flight on one session: the provider's AgentSession against the agent's
own request loop (server.serve_requests) with stub handlers, over a socket pair instead of SSH.

The stub operations wait on gates the test opens, so every ordering claim below is proved by
who was waiting for what, never by how long something took.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from kvmnet_provider.agent import server, workers
from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.connection import session as session_module
from kvmnet_provider.connection.kept import SocketChannel
from kvmnet_provider.connection.session import AgentCallError, AgentSession, HostError
from kvmnet_provider.connection.settings import HostSettings

WAIT = 30.0  # generous: only ever reached when something is broken


@dataclass
class StubAgent:
    """Handlers that record what ran, and gates that hold the waiting ones."""

    events: list[str] = field(default_factory=list)
    started: dict[str, threading.Event] = field(default_factory=dict)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    main_thread: threading.Thread | None = None

    def gate(self, name: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(name, threading.Event())

    def began(self, name: str) -> threading.Event:
        with self.lock:
            return self.started.setdefault(name, threading.Event())

    def note(self, what: str) -> None:
        with self.lock:
            self.events.append(what)

    def waiting(self, verb: str) -> Callable[[dict[str, Any]], Any]:
        def handler(args: dict[str, Any]) -> Any:
            name = args["name"]
            self.note(f"{verb} {name} begins")
            self.began(f"{verb} {name}").set()
            if not self.gate(f"{verb} {name}").wait(WAIT):
                raise AgentError("failed", f"{verb} {name}: the test never opened its gate")
            self.note(f"{verb} {name} ends")
            if args.get("fail"):
                raise AgentError("failed", f"{verb} of {name} failed")
            return {"done": f"{verb} {name}", "worker": threading.current_thread().name}

        return handler

    def handlers(self) -> dict[str, server.Handler]:
        def quick(args: dict[str, Any]) -> Any:
            self.note(f"tap {args['name']}")
            return {"name": args["name"], "thread": threading.current_thread().name}

        def hang(args: dict[str, Any]) -> Any:  # a quick op that is stuck: the loop with it
            self.gate("hang").wait(WAIT)
            return {}

        def delete_many(args: dict[str, Any]) -> Any:
            self.note(f"batch {len(args['items'])}")
            return server.outcomes("link.delete", [{"deleted": True} for _ in args["items"]])

        return {
            "ping": lambda a: {"pid": 1},
            "tap.create": quick,
            "tap.hang": hang,
            "link.delete": lambda a: {"deleted": True},
            "link.delete.many": delete_many,
            "guest.stop": self.waiting("stop"),
            "guest.start": self.waiting("start"),
        }


@dataclass
class Pair:
    session: AgentSession
    agent: StubAgent
    agent_sock: socket.socket
    loop: threading.Thread


def connect(agent: StubAgent) -> Pair:
    """An AgentSession wired to serve_requests: what __init__ does after SSH and the hello."""
    ours, theirs = socket.socketpair()
    inp, out = theirs.makefile("r"), theirs.makefile("w")

    def run_agent() -> None:
        try:
            server.serve_requests(inp, server.line_writer(out), agent.handlers())
        except OSError:
            pass  # the session side closed

    loop = threading.Thread(target=run_agent, daemon=True)
    loop.start()
    agent.main_thread = loop
    session = AgentSession.__new__(AgentSession)
    session._init_state(HostSettings(host="stub.invalid", python="python3"))
    session.client = session.channel = SocketChannel(ours)  # type: ignore[assignment]
    session.stdin = ours.makefile("w")  # type: ignore[assignment]
    session._start_reader()
    return Pair(session, agent, theirs, loop)


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = connect(StubAgent())
    try:
        yield p
    finally:
        for gate in list(p.agent.gates.values()):
            gate.set()  # let every stub handler end
        p.session.close()
        p.loop.join(WAIT)


def wait_for(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def test_quick_op_is_answered_while_a_stop_waits(pair: Pair) -> None:
    session, agent = pair.session, pair.agent
    done: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        stop = pool.submit(
            lambda: (session.call("guest.stop", {"name": "g1"}), done.append("stop"))
        )
        assert agent.began("stop g1").wait(WAIT)  # the agent is inside the stop, held there
        tap = session.call("tap.create", {"name": "t1"})
        done.append("tap")
        assert not stop.done() and done == ["tap"]
        agent.gate("stop g1").set()
        stop.result(WAIT)
    assert done == ["tap", "stop"]
    # the quick op ran on the agent's main loop, the stop in a worker of its own
    assert tap["thread"] == agent.main_thread.name  # type: ignore[union-attr]


def test_stops_of_different_guests_overlap(pair: Pair) -> None:
    session, agent = pair.session, pair.agent
    names = [f"g{k}" for k in range(6)]
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(session.call, "guest.stop", {"name": n}) for n in names]
        for name in names:  # all inside their stop at once: none waits for another
            assert agent.began(f"stop {name}").wait(WAIT), name
        assert not any(f.done() for f in futures)
        for name in names:
            agent.gate(f"stop {name}").set()
        answers = [f.result(WAIT) for f in futures]
    assert [a["done"] for a in answers] == [f"stop {n}" for n in names]
    assert len({a["worker"] for a in answers}) == len(names)


def test_operations_on_one_guest_run_in_arrival_order(pair: Pair) -> None:
    session, agent = pair.session, pair.agent
    with ThreadPoolExecutor(3) as pool:
        stop = pool.submit(session.call, "guest.stop", {"name": "g1"})
        assert agent.began("stop g1").wait(WAIT)
        start = pool.submit(session.call, "guest.start", {"name": "g1"})
        wait_for("the start to be sent", lambda: sent(session, "guest.start"))
        session.call("ping", {})  # read after the start: the agent holds the start by now
        other = pool.submit(session.call, "guest.start", {"name": "g2"})
        assert agent.began("start g2").wait(WAIT)  # another guest is not held up
        agent.gate("start g2").set()
        other.result(WAIT)
        assert not agent.began("start g1").is_set()  # g1's start waits for g1's stop
        agent.gate("start g1").set()
        agent.gate("stop g1").set()
        stop.result(WAIT)
        start.result(WAIT)
    g1 = [e for e in agent.events if e.split()[1:2] == ["g1"]]
    assert g1 == ["stop g1 begins", "stop g1 ends", "start g1 begins", "start g1 ends"]


def sent(session: AgentSession, op: str) -> bool:
    with session._turn:
        return any(w.op == op and w.sent for w in session._waiters.values())


def test_a_failure_answers_only_its_caller(pair: Pair) -> None:
    session, agent = pair.session, pair.agent
    with ThreadPoolExecutor(2) as pool:
        bad = pool.submit(session.call, "guest.stop", {"name": "g1", "fail": True})
        good = pool.submit(session.call, "guest.stop", {"name": "g2"})
        assert agent.began("stop g1").wait(WAIT) and agent.began("stop g2").wait(WAIT)
        agent.gate("stop g1").set()
        with pytest.raises(AgentCallError, match="stop of g1 failed"):
            bad.result(WAIT)
        assert not good.done()
        agent.gate("stop g2").set()
        assert good.result(WAIT)["done"] == "stop g2"
    assert session.alive and session.call("tap.create", {"name": "t1"})["name"] == "t1"


def test_a_timeout_answers_only_its_caller_and_the_late_answer_is_dropped(pair: Pair) -> None:
    session, agent = pair.session, pair.agent
    with pytest.raises(HostError, match=r"no answer from the host agent while guest\.stop"):
        session.call("guest.stop", {"name": "g1"}, timeout=0.2)
    # the agent still answers (as the background ping finds): the session stays in use
    assert session.alive and session.call("tap.create", {"name": "t1"})["name"] == "t1"
    assert session.late_answers == 0
    agent.gate("stop g1").set()  # the stop ends on the host; its answer finds nobody
    wait_for("the late answer", lambda: session.late_answers == 1)
    assert session.alive


def test_an_agent_that_stops_answering_fails_every_caller_and_closes(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "PROBE_TIMEOUT", 0.2)
    session, agent = pair.session, pair.agent
    with ThreadPoolExecutor(2) as pool:
        stop = pool.submit(session.call, "guest.stop", {"name": "g1"})
        assert agent.began("stop g1").wait(WAIT)
        with pytest.raises(HostError, match=r"no answer .* while tap\.hang"):
            session.call("tap.hang", {}, timeout=0.2)  # the agent's loop is stuck in it
        with pytest.raises(HostError, match=r"stopped answering .*; guest\.stop abandoned"):
            stop.result(WAIT)
    assert not session.alive
    with pytest.raises(HostError, match="stopped answering"):
        session.call("ping", {})


def test_the_agent_exiting_fails_every_caller_in_flight(pair: Pair) -> None:
    session, agent = pair.session, pair.agent
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(session.call, "guest.stop", {"name": n}) for n in ("g1", "g2")]
        assert agent.began("stop g1").wait(WAIT) and agent.began("stop g2").wait(WAIT)
        pair.agent_sock.shutdown(socket.SHUT_RDWR)  # the agent's end of the channel is gone
        for future in futures:
            with pytest.raises(HostError, match=r"exited while guest\.stop"):
                future.result(WAIT)
    assert not session.alive


def test_batched_deletes_still_leave_together_and_other_ops_pass_them(pair: Pair) -> None:
    session, agent = pair.session, pair.agent
    names = [f"t{k}" for k in range(5)]
    with ThreadPoolExecutor(len(names)) as pool:
        with session.exclusive():  # nothing leaves: every delete queues
            futures = [
                pool.submit(session.call_batched, "link.delete", {"name": n, "owner": "o"})
                for n in names
            ]
            wait_for("the deletes to queue", lambda: len(session._queued["link.delete"]) == 5)
        assert [f.result(WAIT) for f in futures] == [{"deleted": True}] * 5
    assert agent.events == ["batch 5"]
    # a batch in flight holds up only deletes, not other operations
    with ThreadPoolExecutor(1) as pool:
        stop = pool.submit(session.call, "guest.stop", {"name": "g1"})
        assert agent.began("stop g1").wait(WAIT)
        assert session.call_batched("link.delete", {"name": "t9", "owner": "o"}) == {
            "deleted": True
        }
        agent.gate("stop g1").set()
        stop.result(WAIT)


def test_a_retired_session_closes_when_its_last_caller_is_answered(pair: Pair) -> None:
    session, agent = pair.session, pair.agent
    with ThreadPoolExecutor(1) as pool:
        stop: Future[Any] = pool.submit(session.call, "guest.stop", {"name": "g1"})
        assert agent.began("stop g1").wait(WAIT)
        session.retire()  # replaced by a new connection while a stop is in flight
        assert not session.alive and not session.channel.closed
        agent.gate("stop g1").set()
        assert stop.result(WAIT)["done"] == "stop g1"  # the stop still got its answer
    assert session.channel.closed


# --- the agent alone ---------------------------------------------------------------------
def test_end_of_input_lets_the_waiting_operations_finish() -> None:
    """The controller goes away with stops in flight: each stop still runs to its end (no
    guest is left half stopped) before the loop returns; answers to nobody are dropped."""
    agent = StubAgent()
    sent: list[dict[str, Any]] = []
    lines = [
        json.dumps({"id": k, "op": "guest.stop", "args": {"name": f"g{k}"}}) + "\n"
        for k in range(3)
    ]

    def send(doc: dict[str, Any]) -> None:
        if doc.get("id") == 2:
            raise BrokenPipeError("the controller is gone")
        sent.append(doc)

    loop = threading.Thread(
        target=server.serve_requests, args=(io.StringIO("".join(lines)), send, agent.handlers())
    )
    loop.start()
    for k in range(3):
        assert agent.began(f"stop g{k}").wait(WAIT)
    assert loop.is_alive()  # input ended, yet it waits for the stops
    for k in range(3):
        agent.gate(f"stop g{k}").set()
    loop.join(WAIT)
    assert not loop.is_alive()
    assert sorted(d["id"] for d in sent) == [0, 1]
    assert sorted(e for e in agent.events if e.endswith("ends")) == [
        f"stop g{k} ends" for k in range(3)
    ]


def test_which_operations_wait_and_on_what_object() -> None:
    assert workers.waits("guest.stop") and workers.waits("uplink.takeover")
    assert not workers.waits("tap.create") and not workers.waits("masquerade.ensure")
    assert not workers.waits(None)
    assert workers.object_key("guest.stop", {"name": "g1", "owner": "x"}) == "guest:g1"
    assert workers.object_key("guest.start", {"name": "g1"}) == "guest:g1"
    assert workers.object_key("uplink.confirm", {"token": "abc"}) == "uplink:abc"
    assert workers.object_key("guest.accelerator", {}) == "guest"
