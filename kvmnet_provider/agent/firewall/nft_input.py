"""The INPUT accepts a network's DHCP/DNS server needs (plan.InputRules), in nftables."""

from __future__ import annotations

from typing import Any

from ...spec import validate
from ...spec.family import IPV4, Family
from ...spec.marks import JUMP_MARK, OWNER_PREFIX
from ..errors import AgentError
from . import plan
from .nft_rules import (
    INPUT_PASS,
    NAME,
    TABLE,
    Ruleset,
    describe,
    firewalld_filters,
    is_our_jump,
    managed_by_firewalld,
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
# at the top of the input base chain that holds the host's DROP policy (or firewalld's, whose
# catch-all reject refuses what its zones do not allow, or iptables-nft's `ip filter INPUT`);
# with none of these, of kvmnet's own base chain `input` (policy accept).
INPUT_BASE = {"type": "filter", "hook": "input", "prio": -10, "policy": "accept"}


def input_placement(rs: Ruleset, family: Family = IPV4) -> tuple[str, str, str]:
    """(family, table, base chain) where the jump to KVMNET_INP belongs."""
    ours = family.nft
    bases = [
        c
        for c in rs.chains.values()
        if c.get("hook") == "input"
        and c["family"] in (ours, "inet")
        and (c["family"], c["table"]) != (ours, TABLE)
    ]
    drop = [c for c in bases if c.get("policy") == "drop"]
    firewalld = firewalld_filters(bases)
    filt = [c for c in bases if (c["family"], c["table"], c["name"]) == (ours, "filter", "INPUT")]
    if not (drop or firewalld or filt):
        return ours, TABLE, "input"
    chosen = (drop or firewalld or filt)[0]
    return chosen["family"], chosen["table"], chosen["name"]


def _input_chains(rs: Ruleset) -> list[tuple[str, str]]:
    return [(f, t) for (f, t, n) in rs.chains if n == INPUT_PASS]


def input_read(
    owner: str, net: plan.InputRules | None = None, family: Family = IPV4
) -> dict[str, Any]:
    """`family` is net's when a net is given."""
    fam = net.family if net is not None else family
    mark = OWNER_PREFIX + validate.owner(owner)
    rs = ruleset()
    rules: list[dict[str, object]] = []
    for chain_family, table in _input_chains(rs):
        chain = rs.chain_rules(chain_family, table, INPUT_PASS)
        rules += [wire(r, fam) for r in chain if r.comment == mark]
    where = input_placement(rs, fam)
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
    flows, family = net.flows(), net.family
    where = input_placement(rs, family)
    found = []
    for key, chain in rs.chains.items():
        if chain.get("hook") != "input" or chain["family"] not in (family.nft, "inet"):
            continue
        if key == where or (chain["family"], chain["table"]) == (family.nft, TABLE):
            continue
        if managed_by_firewalld(chain["family"], chain["table"]):
            continue
        if chain.get("policy") == "drop":
            found.append(f"table {key[0]} {key[1]} chain {key[2]} (policy drop)")
        found += [
            text(r, family)
            for r in rs.chain_rules(*key)
            if plan.could_block(describe(r.expr, family), flows)
        ]
    rules = rs.chain_rules(*where)
    at = next((i for i, r in enumerate(rules) if is_our_jump(r, INPUT_PASS)), 0)
    found += [
        text(r, family) for r in rules[:at] if plan.could_block(describe(r.expr, family), flows)
    ]
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
    family, table, base = input_placement(rs, net.family)
    ours = net.family.nft
    commands: list[dict[str, Any]] = []
    if (family, table) == (ours, TABLE):
        commands.append({"add": {"table": {"family": ours, "name": TABLE}}})
        commands.append(
            {"add": {"chain": {"family": ours, "table": TABLE, "name": base, **INPUT_BASE}}}
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
        expr = rule_expr(rule, net.family)
        commands.append({"add": {"rule": rule_doc(family, table, INPUT_PASS, mark, expr)}})
    run(commands, "the DHCP/DNS input rules")
    return input_read(owner, net)


def input_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    mark = OWNER_PREFIX + validate.owner(owner)
    rs = ruleset()
    commands: list[dict[str, Any]] = []
    left = 0
    for chain_family, table in _input_chains(rs):
        for r in rs.chain_rules(chain_family, table, INPUT_PASS):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
            else:
                left += 1
    removed, ours = len(commands), family.nft
    if not left:  # no network's server is left: the jumps, chains and own base chain go
        for existing in rs.rules.values():
            for r in existing:
                if is_our_jump(r, INPUT_PASS):
                    commands.append({"delete": {"rule": r.ref()}})
        for chain_family, table in _input_chains(rs):
            commands.append(
                {"delete": {"chain": {"family": chain_family, "table": table, "name": INPUT_PASS}}}
            )
        if (ours, TABLE, "input") in rs.chains:
            commands.append(
                {"delete": {"chain": {"family": ours, "table": TABLE, "name": "input"}}}
            )
    run(commands, "the removal of the DHCP/DNS input rules")
    tidy(family)
    return {"removed": removed}
