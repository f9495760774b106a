"""The INPUT accepts a network's DHCP/DNS server needs (plan.InputRules), in nftables."""

from __future__ import annotations

from typing import Any

from ...spec import validate
from ...spec.marks import JUMP_MARK, OWNER_PREFIX
from ..errors import AgentError
from . import plan
from .nft_rules import (
    FAMILY,
    INPUT_PASS,
    NAME,
    TABLE,
    Ruleset,
    describe,
    is_our_jump,
    rule_doc,
    rule_expr,
    ruleset,
    run,
    text,
    tidy,
    wire,
)

# --- INPUT: what a network's DHCP/DNS server needs (plan.InputRules) ------------------------
# A regular chain KVMNET_INP holds the owners' accepts, reached by one jump (comment "kvmnet")
# at the top of the input base chain that holds the host's DROP policy (or iptables-nft's
# `ip filter INPUT`); with neither, of kvmnet's own base chain `input` (policy accept).
INPUT_BASE = {"type": "filter", "hook": "input", "prio": -10, "policy": "accept"}


def input_placement(rs: Ruleset) -> tuple[str, str, str]:
    """(family, table, base chain) where the jump to KVMNET_INP belongs."""
    bases = [
        c
        for c in rs.chains.values()
        if c.get("hook") == "input"
        and c["family"] in ("ip", "inet")
        and (c["family"], c["table"]) != (FAMILY, TABLE)
    ]
    drop = [c for c in bases if c.get("policy") == "drop"]
    filt = [c for c in bases if (c["family"], c["table"], c["name"]) == ("ip", "filter", "INPUT")]
    if not (drop or filt):
        return FAMILY, TABLE, "input"
    chosen = (drop or filt)[0]
    return chosen["family"], chosen["table"], chosen["name"]


def _input_chains(rs: Ruleset) -> list[tuple[str, str]]:
    return [(f, t) for (f, t, n) in rs.chains if n == INPUT_PASS]


def input_read(owner: str, net: plan.InputRules | None = None) -> dict[str, Any]:
    mark = OWNER_PREFIX + validate.owner(owner)
    rs = ruleset()
    rules: list[dict[str, object]] = []
    for family, table in _input_chains(rs):
        rules += [wire(r) for r in rs.chain_rules(family, table, INPUT_PASS) if r.comment == mark]
    where = input_placement(rs)
    jump = any(is_our_jump(r, INPUT_PASS) for r in rs.chain_rules(*where))
    problems = []
    if rules and not jump:
        problems.append(f"the jump to {INPUT_PASS} is missing from table {' '.join(where)}")
    if net is not None and rules and rules != [r.to_wire() for r in net.rules()]:
        problems.append("the DHCP/DNS input rules differ from what kvmnet installs")
    if net is not None and rules:
        problems += [f"blocked by {b}" for b in input_blockers(rs, net)]
    return {
        "backend": NAME,
        "rules": rules,
        "count": len(rules),
        "jump": " ".join(where) if jump else None,
        "problems": problems,
    }


def input_blockers(rs: Ruleset, net: plan.InputRules) -> list[str]:
    """Foreign DROP/REJECT rules above our jump (and other input base chains with policy drop)
    that drop this network's DHCP or DNS."""
    flows = net.flows()
    where = input_placement(rs)
    found = []
    for key, chain in rs.chains.items():
        if chain.get("hook") != "input" or chain["family"] not in ("ip", "inet"):
            continue
        if key == where or (chain["family"], chain["table"]) == (FAMILY, TABLE):
            continue
        if chain.get("policy") == "drop":
            found.append(f"table {key[0]} {key[1]} chain {key[2]} (policy drop)")
        found += [
            text(r) for r in rs.chain_rules(*key) if plan.could_block(describe(r.expr), flows)
        ]
    rules = rs.chain_rules(*where)
    at = next((i for i, r in enumerate(rules) if is_our_jump(r, INPUT_PASS)), 0)
    found += [text(r) for r in rules[:at] if plan.could_block(describe(r.expr), flows)]
    return found


def input_ensure(owner: str, net: plan.InputRules) -> dict[str, Any]:
    mark = OWNER_PREFIX + validate.owner(owner)
    found = input_blockers(ruleset(), net)
    if found:
        raise AgentError(
            "blocked",
            f"{found[0]} drops this network's DHCP/DNS before kvmnet's rules can accept it; "
            f"delete that rule or move it below kvmnet's jump to {INPUT_PASS}, then run up again",
        )
    current = input_read(owner, net)
    if current["count"] and not current["problems"]:
        return current
    rs = ruleset()
    family, table, base = input_placement(rs)
    commands: list[dict[str, Any]] = []
    if (family, table) == (FAMILY, TABLE):
        commands.append({"add": {"table": {"family": FAMILY, "name": TABLE}}})
        commands.append(
            {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": base, **INPUT_BASE}}}
        )
    commands.append({"add": {"chain": {"family": family, "table": table, "name": INPUT_PASS}}})
    for key, existing in rs.rules.items():  # a jump elsewhere (the host's DROP moved) goes
        for r in existing:
            if is_our_jump(r, INPUT_PASS) and key != (family, table, base):
                commands.append({"delete": {"rule": r.ref()}})
    if not any(is_our_jump(r, INPUT_PASS) for r in rs.chain_rules(family, table, base)):
        jump = [{"jump": {"target": INPUT_PASS}}]
        commands.append({"insert": {"rule": rule_doc(family, table, base, JUMP_MARK, jump)}})
    for f, t in _input_chains(rs):  # this owner's old rules go, wherever they are
        for r in rs.chain_rules(f, t, INPUT_PASS):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
    for rule in net.rules():
        commands.append(
            {"add": {"rule": rule_doc(family, table, INPUT_PASS, mark, rule_expr(rule))}}
        )
    run(commands, "the DHCP/DNS input rules")
    return input_read(owner, net)


def input_remove(owner: str) -> dict[str, Any]:
    mark = OWNER_PREFIX + validate.owner(owner)
    rs = ruleset()
    commands: list[dict[str, Any]] = []
    left = 0
    for family, table in _input_chains(rs):
        for r in rs.chain_rules(family, table, INPUT_PASS):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
            else:
                left += 1
    removed = len(commands)
    if not left:  # no network's server is left: the jumps, chains and own base chain go
        for existing in rs.rules.values():
            for r in existing:
                if is_our_jump(r, INPUT_PASS):
                    commands.append({"delete": {"rule": r.ref()}})
        for family, table in _input_chains(rs):
            commands.append(
                {"delete": {"chain": {"family": family, "table": table, "name": INPUT_PASS}}}
            )
        if (FAMILY, TABLE, "input") in rs.chains:
            commands.append(
                {"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": "input"}}}
            )
    run(commands, "the removal of the DHCP/DNS input rules")
    tidy()
    return {"removed": removed}
