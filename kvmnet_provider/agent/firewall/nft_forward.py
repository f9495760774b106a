"""The forward rules of a network (plan.NetworkRules) in nftables: kvmnet's sections, and the
pass chain in the host's own table when the host's forward chain would drop what they accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...spec import validate
from ...spec.family import IPV4, Family
from ...spec.marks import JUMP_MARK, OWNER_PREFIX
from ..errors import AgentError
from . import plan
from .nft_rules import (
    DOCKER_USER,
    NAME,
    PASS,
    SECTIONS,
    TABLE,
    Ruleset,
    base_chain_commands,
    describe,
    firewalld_filters,
    is_our_jump,
    jumps_to,
    managed_by_firewalld,
    pass_chains,
    remove_marked,
    rule_doc,
    rule_expr,
    ruleset,
    run,
    text,
    wire,
)


# --- where the pass chain goes ----------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    family: str
    table: str
    base: str
    jump_chain: str  # DOCKER-USER or the base chain


def placement(rs: Ruleset, family: Family = IPV4) -> Placement | None:
    """The table whose forward base chain holds the host's DROP (or firewalld's catch-all
    reject, or iptables-nft's filter)."""
    bases = rs.forward_bases(family)
    drop = [c for c in bases if c.get("policy") == "drop"]
    firewalld = firewalld_filters(bases)
    filt = [
        c
        for c in bases
        if (c["family"], c["table"], c["name"]) == (family.nft, "filter", "FORWARD")
    ]
    candidates = drop or firewalld or filt
    if not candidates:
        return None
    chosen = candidates[0]
    in_family, table, base = chosen["family"], chosen["table"], chosen["name"]
    jump_chain = base
    if (in_family, table, DOCKER_USER) in rs.chains and any(
        jumps_to(r, DOCKER_USER) for r in rs.chain_rules(in_family, table, base)
    ):
        jump_chain = DOCKER_USER
    return Placement(in_family, table, base, jump_chain)


# --- forward rules ----------------------------------------------------------------------------
def _ours(rs: Ruleset, mark: str, fam: Family = IPV4) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for section, chain in SECTIONS.items():
        rules = [r for r in rs.chain_rules(fam.nft, TABLE, chain) if r.comment == mark]
        found[section] = [wire(r, fam) for r in rules]
    passes = []
    for family, table in pass_chains(rs):
        passes += [wire(r, fam) for r in rs.chain_rules(family, table, PASS) if r.comment == mark]
    found["pass"] = passes
    return found


def _want(net: plan.NetworkRules, where: Placement | None) -> dict[str, list[dict[str, object]]]:
    want = {s: [r.to_wire() for r in rules] for s, rules in net.sections().items()}
    want["pass"] = [r.to_wire() for r in net.passes()] if where else []
    return want


def _jump_location(rs: Ruleset) -> tuple[str, str, str, int] | None:
    for (family, table, chain), rules in rs.rules.items():
        for index, rule in enumerate(rules):
            if is_our_jump(rule, PASS):
                return family, table, chain, index
    return None


def forward_read(
    owner: str, net: plan.NetworkRules | None = None, family: Family = IPV4
) -> dict[str, Any]:
    """`family` is net's when a net is given."""
    family = net.family if net is not None else family
    mark = OWNER_PREFIX + validate.owner(owner)
    rs = ruleset()
    where = placement(rs, family)
    sections = _ours(rs, mark, family)
    count = sum(len(v) for v in sections.values())
    problems = []
    if count:
        base = rs.chain_rules(family.nft, TABLE, "forward")
        if [r.expr[-1].get("jump", {}).get("target") for r in base] != list(SECTIONS.values()):
            problems.append(f"table {family.nft} {TABLE} chain forward lost its jumps")
        jump = _jump_location(rs)
        if where is not None:
            want_at = (where.family, where.table, where.jump_chain)
            if jump is None:
                problems.append(
                    f"the jump to {PASS} is missing from table {where.family} {where.table} "
                    f"chain {where.jump_chain}"
                )
            elif jump[:3] != want_at:
                problems.append(f"the jump to {PASS} is in {' '.join(jump[:3])}, not {want_at}")
        if net is not None and sections != _want(net, where):
            problems.append("the network's rules differ from what the model installs")
        if net is not None:
            problems += [f"blocked by {b}" for b in blockers(rs, net)]
    jump = _jump_location(rs)
    return {
        "backend": NAME,
        "sections": sections,
        "count": count,
        "jump": f"{jump[0]} {jump[1]} {jump[2]}" if jump else None,
        "problems": problems,
    }


def blockers(rs: Ruleset, net: plan.NetworkRules) -> list[str]:
    flows, family = net.flows(), net.family
    where = placement(rs, family)
    found = []
    for base in rs.forward_bases(family):
        key = (base["family"], base["table"], base["name"])
        if where is not None and key == (where.family, where.table, where.base):
            continue
        if managed_by_firewalld(key[0], key[1]):
            continue
        rules = rs.chain_rules(*key)
        if base.get("policy") == "drop":
            found.append(f"table {key[0]} {key[1]} chain {key[2]} (policy drop)")
        found += [
            text(r, family) for r in rules if plan.could_block(describe(r.expr, family), flows)
        ]
    if where is None:
        return found
    return found + [
        text(r, family)
        for r in _before_our_jump(rs, where)
        if plan.could_block(describe(r.expr, family), flows)
    ]


def admitters(rs: Ruleset, net: plan.NetworkRules) -> list[str]:
    """Foreign accepts that run before our jump in the chain that holds it, letting in what
    this network refuses (an accept in another base chain ends nothing: ours still runs)."""
    refused, family = net.refused_inbound(), net.family
    where = placement(rs, family)
    if where is None or not refused:
        return []
    return [
        text(r, family)
        for r in _before_our_jump(rs, where)
        if plan.could_admit(describe(r.expr, family), refused)
    ]


def _before_our_jump(rs: Ruleset, where: Placement) -> list[Any]:
    """The rules a packet meets before kvmnet's jump: the base chain's up to its jump to
    DOCKER-USER (when ours is there), then those above ours in the chain that holds it."""
    found = []
    if where.jump_chain == DOCKER_USER:
        base_rules = rs.chain_rules(where.family, where.table, where.base)
        found += base_rules[: next(i for i, r in enumerate(base_rules) if jumps_to(r, DOCKER_USER))]
    jump = _jump_location(rs)
    if jump is not None and jump[:3] == (where.family, where.table, where.jump_chain):
        found += rs.chain_rules(*jump[:3])[: jump[3]]
    return found


def forward_admitters(owner: str, net: plan.NetworkRules) -> dict[str, Any]:
    return {"backend": NAME, "admitted_by": admitters(ruleset(), net)}


def forward_ensure(owner: str, net: plan.NetworkRules) -> dict[str, Any]:
    mark = OWNER_PREFIX + validate.owner(owner)
    ours = net.family.nft
    rs = ruleset()
    found = blockers(rs, net)
    if found:
        raise AgentError(
            "blocked",
            f"{found[0]} drops this network's traffic before kvmnet's rules can accept it; "
            f"delete that rule or move it below kvmnet's jump to {PASS}, then run up again",
        )
    current = forward_read(owner, net)
    if current["count"] and not current["problems"]:
        return current
    where = placement(rs, net.family)
    commands = base_chain_commands(net.family)
    for chain in SECTIONS.values():
        commands.append({"add": {"chain": {"family": ours, "table": TABLE, "name": chain}}})
    base = rs.chain_rules(ours, TABLE, "forward")
    if [r.expr[-1].get("jump", {}).get("target") for r in base] != list(SECTIONS.values()):
        commands.append({"flush": {"chain": {"family": ours, "table": TABLE, "name": "forward"}}})
        for chain in SECTIONS.values():
            commands.append(
                {
                    "add": {
                        "rule": rule_doc(
                            ours, TABLE, "forward", JUMP_MARK, [{"jump": {"target": chain}}]
                        )
                    }
                }
            )
    # This owner's old rules go, wherever they are; the new ones are appended.
    for chain in SECTIONS.values():
        for r in rs.chain_rules(ours, TABLE, chain):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
    for family, table in pass_chains(rs):
        for r in rs.chain_rules(family, table, PASS):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
    for section, planned in net.sections().items():
        for rule in planned:
            commands.append(
                {
                    "add": {
                        "rule": rule_doc(
                            ours, TABLE, SECTIONS[section], mark, rule_expr(rule, net.family)
                        )
                    }
                }
            )
    if where is not None:
        commands.append(
            {"add": {"chain": {"family": where.family, "table": where.table, "name": PASS}}}
        )
        for (family, table, chain), existing in rs.rules.items():
            for r in existing:  # a jump in the wrong place (DOCKER-USER appeared since) moves
                if is_our_jump(r, PASS) and (family, table, chain) != (
                    where.family,
                    where.table,
                    where.jump_chain,
                ):
                    commands.append({"delete": {"rule": r.ref()}})
        placed = rs.chain_rules(where.family, where.table, where.jump_chain)
        if not any(is_our_jump(r, PASS) for r in placed):
            commands.append(
                {
                    "insert": {
                        "rule": rule_doc(
                            where.family,
                            where.table,
                            where.jump_chain,
                            JUMP_MARK,
                            [{"jump": {"target": PASS}}],
                        )
                    }
                }
            )
        for rule in net.passes():
            expr = rule_expr(rule, net.family)
            commands.append(
                {"add": {"rule": rule_doc(where.family, where.table, PASS, mark, expr)}}
            )
    run(commands, "the forward rules")
    return forward_read(owner, net)


def forward_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    mark = OWNER_PREFIX + validate.owner(owner)
    rs = ruleset()
    chains = [(family.nft, TABLE, c) for c in SECTIONS.values()]
    chains += [(f, t, PASS) for f, t in pass_chains(rs)]
    return {"removed": remove_marked(chains, mark, family)}
