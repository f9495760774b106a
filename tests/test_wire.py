"""The agent protocol's shapes (spec/wire.py), as both ends build and read them."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest

from kvmnet_provider.agent import server
from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.spec import wire

AGENT = Path(__file__).resolve().parent.parent / "kvmnet_provider" / "agent"


def kinds_the_agent_raises() -> set[str]:
    found = set()
    for path in AGENT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AgentError":
                kind = node.args[0]
                assert isinstance(kind, ast.Constant), f"{path}: a kind must be a literal"
                found.add(kind.value)
    return found


def test_every_kind_the_agent_raises_is_a_wire_error_kind() -> None:
    raised = kinds_the_agent_raises()
    assert "blocked" in raised  # the firewall's refusal, past a foreign DROP
    assert raised <= set(wire.ERROR_KINDS)


def test_the_agent_answers_in_the_wire_shapes() -> None:
    def boom(args: wire.Args) -> None:
        raise AgentError("blocked", "a DROP is first")

    handlers: wire.Handlers = {"ok": lambda a: {"echo": a["x"]}, "boom": boom}
    lines = [
        json.dumps(wire.request(1, "ok", {"x": 2})),
        json.dumps(wire.request(2, "boom", {})),
        json.dumps(wire.request(3, "nothing", {})),
        json.dumps({"id": 4, "op": "ok"}),  # no args: x is missing
        "not json",
    ]
    sent: list[object] = []
    server.serve_requests(io.StringIO("\n".join(lines) + "\n"), sent.append, handlers)
    answers = {a["id"]: a for a in map(wire.parse_answer, sent)}
    assert answers[1] == wire.answered(1, {"echo": 2})
    assert answers[2] == wire.refused(2, wire.error_body("blocked", "a DROP is first"))
    assert answers[3]["error"]["kind"] == "invalid"
    assert answers[4]["error"] == wire.error_body("invalid", "missing argument 'x'")
    assert answers[None]["error"] == wire.error_body("invalid", "bad JSON")


def test_the_hello_names_the_protocol() -> None:
    out = io.StringIO()
    server.serve(io.StringIO(""), out)
    hello = wire.parse_hello(json.loads(out.getvalue().splitlines()[0]))
    assert hello["protocol"] == wire.PROTOCOL


@pytest.mark.parametrize(
    "line",
    [[], {"id": 1}, {"id": "1", "ok": True}, {"ok": "yes"}],
)
def test_a_line_that_is_not_an_answer_is_refused(line: object) -> None:
    with pytest.raises(ValueError):
        wire.parse_answer(line)


def test_an_unknown_error_kind_reads_as_failed() -> None:
    answer = wire.parse_answer({"id": 1, "ok": False, "error": {"kind": "odd", "message": "m"}})
    assert answer["error"] == {"kind": "failed", "message": "m"}
    item = wire.parse_item({"ok": False})
    assert item["error"]["kind"] == "failed"
