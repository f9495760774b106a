"""kvmnet's filter accepts in both backends at once: for a host whose legacy tables and
nftables both drop at a hook (a DROP in any base chain at a hook is final, so an accept in
one backend alone cannot get a packet past the other's DROP).

Only the filter operations (forward_*, input_*) are doubled; NAT is not blocked by a filter
DROP and stays in one backend (backend.py picks it). Every answer is the two backends'
answers merged: a read reports drift when either side has lost its rules."""

from __future__ import annotations

from typing import Any

from ...spec.family import IPV4, Family
from ...spec.firewall import BOTH, RULE_BACKENDS
from . import plan
from .loading import load

NAME = BOTH


def _sides() -> list[Any]:
    return [load(name) for name in RULE_BACKENDS]


def _merge_read(answers: list[dict[str, Any]], rules_key: str) -> dict[str, Any]:
    """One read of both: the rules as the first side holds them, every side's problems
    (named by side), and one missing side is drift too."""
    counts = [int(a.get("count") or 0) for a in answers]
    problems: list[str] = []
    for name, answer in zip(RULE_BACKENDS, answers, strict=True):
        problems += [f"{name}: {p}" for p in answer.get("problems") or []]
        if any(counts) and not answer.get("count"):
            problems.append(f"{name}: kvmnet's rules are missing")
    jumps = [f"{n}: {a['jump']}" for n, a in zip(RULE_BACKENDS, answers, strict=True)
             if a.get("jump")]  # fmt: skip
    return {
        "backend": NAME,
        rules_key: answers[0].get(rules_key),
        "count": sum(counts),
        "jump": "; ".join(jumps) or None,
        "problems": problems,
    }


def _removed(answers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"removed": sum(int(a.get("removed") or 0) for a in answers)}


def forward_read(
    owner: str, net: plan.NetworkRules | None = None, family: Family = IPV4
) -> dict[str, Any]:
    return _merge_read([s.forward_read(owner, net, family) for s in _sides()], "sections")


def forward_ensure(owner: str, net: plan.NetworkRules) -> dict[str, Any]:
    return _merge_read([s.forward_ensure(owner, net) for s in _sides()], "sections")


def forward_admitters(owner: str, net: plan.NetworkRules) -> dict[str, Any]:
    admitted: list[str] = []
    for side in _sides():
        admitted += side.forward_admitters(owner, net).get("admitted_by") or []
    return {"backend": NAME, "admitted_by": admitted}


def forward_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return _removed([s.forward_remove(owner, family) for s in _sides()])


def input_read(
    owner: str, net: plan.InputRules | None = None, family: Family = IPV4
) -> dict[str, Any]:
    return _merge_read([s.input_read(owner, net, family) for s in _sides()], "rules")


def input_ensure(owner: str, net: plan.InputRules) -> dict[str, Any]:
    return _merge_read([s.input_ensure(owner, net) for s in _sides()], "rules")


def input_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return _removed([s.input_remove(owner, family) for s in _sides()])
