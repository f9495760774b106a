"""The iptables backend: python-iptables on the legacy x_tables tables.

NAT and port forwards are iptables_nat.py's (nat POSTROUTING / PREROUTING). The forward rules
live in the filter table in kvmnet's own chains, shared by every kvmnet network on the host:
  KVMNET_FWD  reached by ONE jump at the top of DOCKER-USER (when FORWARD jumps there: Docker
              keeps that chain across restarts) or of FORWARD; holds three jumps, in order:
  KVMNET_FWX  guest to guest (cross), KVMNET_FWI  into bridges, KVMNET_FWO  out of bridges.
Each network's rules carry the comment "kvmnet:<owner>"; the jumps carry "kvmnet". Removal
deletes the owner's rules, and the chains and the jump when no network's rules are left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import iptc  # type: ignore[import-untyped]

from ...spec.family import IPV4, Family
from ...spec.marks import JUMP_MARK, OWNER_PREFIX
from ..errors import AgentError
from . import iptables_nat, plan, xtables
from .plan import Rule

NAME = "iptables"
TOP = "KVMNET_FWD"
CHAINS = {"cross": "KVMNET_FWX", "input": "KVMNET_FWI", "output": "KVMNET_FWO"}
DOCKER_USER = "DOCKER-USER"
TARGETS = {"ACCEPT": "accept", "REJECT": "reject", "DROP": "drop"}

# NAT and port forwards: iptables_nat.py's rules in the nat table.
masquerade_read = iptables_nat.masquerade_read
masquerade_ensure = iptables_nat.masquerade_ensure
masquerade_remove = iptables_nat.masquerade_remove
dnat_read = iptables_nat.dnat_read
dnat_ensure = iptables_nat.dnat_ensure
dnat_remove = iptables_nat.dnat_remove


def _filter(family: Family = IPV4) -> Any:
    table = iptables_nat.table_class(family)(iptc.Table.FILTER)
    table.refresh()  # other agents (other stacks) may have changed it
    return table


def _chain(table: Any, name: str) -> Any | None:
    return iptc.Chain(table, name) if table.is_chain(name) else None


def describe(rule: Any) -> Rule | None:
    """A rule as plan.Rule, or None when it uses matches kvmnet does not read."""
    target = rule.target.name if rule.target else ""
    verdict = TARGETS.get(target, target)
    fields: dict[str, Any] = {}
    for key, value in (("iif", rule.in_interface), ("oif", rule.out_interface)):
        if value:
            if value.startswith("!"):
                return None
            fields[key] = value
    for key, value in (("src", rule.src), ("dst", rule.dst)):
        if value and value.startswith("!"):
            return None
        fields[key] = plan.cidr(value)
    if rule.protocol not in (None, "", "ip", "all", "0"):
        fields["proto"] = rule.protocol
    for match in rule.matches:
        if match.name == "comment":
            continue
        if match.name in iptables_nat.PROTOCOLS and match.dport and not match.sport:
            fields["dport"] = int(match.dport)
        elif match.name == "conntrack" and match.ctstate:
            states = sorted(s.lower() for s in match.ctstate.split(","))
            fields["ct"] = plan.CT_DNAT if states == ["dnat"] else ",".join(states)
        else:
            return None
    return Rule(verdict, **fields)


def _build(rule: Rule, mark: str, family: Family = IPV4) -> Any:
    built = iptables_nat.new_rule(family)
    if rule.iif:
        built.in_interface = rule.iif
    if rule.oif:
        built.out_interface = rule.oif
    if rule.src:
        built.src = rule.src
    if rule.dst:
        built.dst = rule.dst
    if rule.proto:
        built.protocol = rule.proto
        if rule.dport:
            built.create_match(rule.proto).dport = str(rule.dport)
    if rule.ct:
        states = "DNAT" if rule.ct == plan.CT_DNAT else "RELATED,ESTABLISHED"
        built.create_match("conntrack").ctstate = states
    built.create_match("comment").comment = mark
    built.create_target(rule.verdict.upper())
    return built


def _jump(target: str, family: Family = IPV4) -> Any:
    rule = iptables_nat.new_rule(family)
    rule.create_match("comment").comment = JUMP_MARK
    rule.create_target(target)
    return rule


def _is_jump(rule: Any, target: str) -> bool:
    return (
        bool(rule.target and rule.target.name == target) and iptables_nat.comment(rule) == JUMP_MARK
    )


def jump_chain(table: Any) -> str:
    """Where our jump goes: DOCKER-USER when FORWARD reaches it, else FORWARD itself."""
    if table.is_chain(DOCKER_USER):
        forward = iptc.Chain(table, "FORWARD")
        if any(r.target and r.target.name == DOCKER_USER for r in forward.rules):
            return DOCKER_USER
    return "FORWARD"


def _jump_position(table: Any) -> tuple[str | None, int | None]:
    for name in (DOCKER_USER, "FORWARD"):
        chain = _chain(table, name)
        if chain is None:
            continue
        for index, rule in enumerate(chain.rules):
            if _is_jump(rule, TOP):
                return name, index
    return None, None


def _ours(table: Any, mark: str) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for section, name in CHAINS.items():
        chain = _chain(table, name)
        rules = [] if chain is None else [r for r in chain.rules if iptables_nat.comment(r) == mark]
        described = [describe(r) for r in rules]
        found[section] = [r.to_wire() if r else {"unknown": True} for r in described]
    return found


def _wire(sections: dict[str, list[Rule]]) -> dict[str, list[dict[str, object]]]:
    return {s: [r.to_wire() for r in rules] for s, rules in sections.items()}


@xtables.holding
def forward_read(
    owner: str, net: plan.NetworkRules | None = None, family: Family = IPV4
) -> dict[str, Any]:
    """`family` is net's when a net is given."""
    mark = OWNER_PREFIX + owner
    table = _filter(net.family if net is not None else family)
    sections = _ours(table, mark)
    where, _ = _jump_position(table)
    problems = []
    want_where = jump_chain(table)
    count = sum(len(v) for v in sections.values())
    if count and where is None:
        problems.append(f"the jump to {TOP} is missing from filter {want_where}")
    elif count and where != want_where:
        problems.append(f"the jump to {TOP} is in {where}, not in {want_where}")
    if count:
        top = _chain(table, TOP)
        have = [r.target.name for r in top.rules if _is_jump(r, r.target.name)] if top else []
        if have != list(CHAINS.values()):
            problems.append(f"{TOP} does not jump to {', '.join(CHAINS.values())} in order")
    if net is not None and count and sections != _wire(net.sections()):
        problems.append("the network's rules differ from what the model installs")
    if net is not None and count:
        problems += [f"blocked by {b}" for b in blockers(table, net)]
    return {
        "backend": NAME,
        "sections": sections,
        "count": count,
        "jump": where,
        "problems": problems,
    }


def blockers(table: Any, net: plan.NetworkRules) -> list[str]:
    """Foreign DROP/REJECT rules that run before our jump and can drop this network's traffic."""
    flows = net.flows()
    return _before_jump(table, lambda r: plan.could_block(describe(r), flows))


def admitters(table: Any, net: plan.NetworkRules) -> list[str]:
    """Foreign ACCEPT rules that run before our jump and let in what this network refuses."""
    refused = net.refused_inbound()
    return _before_jump(table, lambda r: plan.could_admit(describe(r), refused))


def forward_admitters(owner: str, net: plan.NetworkRules) -> dict[str, Any]:
    return {"backend": NAME, "admitted_by": admitters(_filter(net.family), net)}


def _before_jump(table: Any, hit: Callable[[Any], bool]) -> list[str]:
    """The rules `hit` picks among those that run before our jump, as messages name them."""
    found = []
    where, position = _jump_position(table)
    target_chain = where or jump_chain(table)
    chain = iptc.Chain(table, target_chain)
    before = list(chain.rules)[: position or 0] if where else []
    if target_chain == DOCKER_USER:
        forward = list(iptc.Chain(table, "FORWARD").rules)
        cut = next(i for i, r in enumerate(forward) if r.target and r.target.name == DOCKER_USER)
        found += [_say("FORWARD", r) for r in forward[:cut] if hit(r)]
    found += [_say(target_chain, r) for r in before if hit(r)]
    return found


def _say(chain: str, rule: Any) -> str:
    described = describe(rule)
    text = described.text() if described else rule.target.name
    return f"filter {chain} rule '-A {chain} {text}' (iptables-legacy)"


def _replace_marked(chain: Any, mark: str, rules: Iterable[Rule], family: Family) -> None:
    """Swap the rules carrying `mark` in `chain` for `rules` (in one uncommitted change)."""
    for rule in [r for r in chain.rules if iptables_nat.comment(r) == mark]:
        chain.delete_rule(rule)
    for rule in rules:
        chain.append_rule(_build(rule, mark, family))


@xtables.holding
def forward_ensure(owner: str, net: plan.NetworkRules) -> dict[str, Any]:
    mark = OWNER_PREFIX + owner
    table = _filter(net.family)
    problems = blockers(table, net)
    if problems:
        raise AgentError(
            "blocked",
            f"{problems[0]} runs before kvmnet's jump to {TOP} and drops this network's "
            f"traffic; delete that rule or move it below kvmnet's jump, then run up again",
        )
    current = forward_read(owner, net)
    if current["count"] and not current["problems"]:
        return current
    with xtables.transaction(table, "the forward rules"):
        for name in (TOP, *CHAINS.values()):
            if not table.is_chain(name):
                table.create_chain(name)
        top = iptc.Chain(table, TOP)
        if [r.target.name for r in top.rules] != list(CHAINS.values()):
            top.flush()
            for name in CHAINS.values():
                top.append_rule(_jump(name, net.family))
        where = jump_chain(table)
        for name in (DOCKER_USER, "FORWARD"):
            chain = _chain(table, name)
            if chain is not None and name != where:
                for rule in [r for r in chain.rules if _is_jump(r, TOP)]:
                    chain.delete_rule(rule)
        chain = iptc.Chain(table, where)
        if not any(_is_jump(r, TOP) for r in chain.rules):
            chain.insert_rule(_jump(TOP, net.family), 0)
        for section, rules in net.sections().items():
            _replace_marked(iptc.Chain(table, CHAINS[section]), mark, rules, net.family)
    return forward_read(owner, net)


@xtables.holding
def forward_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    mark = OWNER_PREFIX + owner
    table = _filter(family)
    removed = left = 0
    with xtables.transaction(table, "the removal of the forward rules"):
        for name in CHAINS.values():
            chain = _chain(table, name)
            if chain is not None:
                gone, kept = iptables_nat.drop_marked(chain, mark)
                removed, left = removed + gone, left + kept
        if not left:  # no kvmnet network is left on this host: the chains and the jump go
            for name in (DOCKER_USER, "FORWARD"):
                chain = _chain(table, name)
                if chain is not None:
                    for rule in [r for r in chain.rules if _is_jump(r, TOP)]:
                        chain.delete_rule(rule)
            for name in (TOP, *CHAINS.values()):
                chain = _chain(table, name)
                if chain is not None:
                    chain.flush()
            for name in (TOP, *CHAINS.values()):
                if table.is_chain(name):
                    table.delete_chain(name)
    return {"removed": removed}


# --- INPUT: what a network's DHCP/DNS server needs (plan.InputRules) ------------------------
# One chain KVMNET_INP, reached by one jump (comment "kvmnet") at the top of filter INPUT, so
# its accepts run before the host's own rules and a DROP policy; the rules carry the owner.
INPUT_CHAIN = "KVMNET_INP"


@xtables.holding
def input_read(
    owner: str, net: plan.InputRules | None = None, family: Family = IPV4
) -> dict[str, Any]:
    """`family` is net's when a net is given."""
    mark = OWNER_PREFIX + owner
    table = _filter(net.family if net is not None else family)
    chain = _chain(table, INPUT_CHAIN)
    ours = [] if chain is None else [r for r in chain.rules if iptables_nat.comment(r) == mark]
    rules = [d.to_wire() if (d := describe(r)) else {"unknown": True} for r in ours]
    jumps = [r for r in iptc.Chain(table, "INPUT").rules if _is_jump(r, INPUT_CHAIN)]
    problems = []
    if rules and not jumps:
        problems.append(f"the jump to {INPUT_CHAIN} is missing from filter INPUT")
    if net is not None and rules and rules != [r.to_wire() for r in net.rules()]:
        problems.append("the DHCP/DNS input rules differ from what kvmnet installs")
    if net is not None and rules:
        problems += [f"blocked by {b}" for b in input_blockers(table, net)]
    jump = "filter INPUT" if jumps else None
    return {"backend": NAME, "rules": rules, "count": len(rules), "jump": jump,
            "problems": problems}  # fmt: skip


def input_blockers(table: Any, net: plan.InputRules) -> list[str]:
    """Foreign DROP/REJECT rules above our jump in INPUT that drop DHCP or DNS of `net`."""
    rules = list(iptc.Chain(table, "INPUT").rules)
    at = next((i for i, r in enumerate(rules) if _is_jump(r, INPUT_CHAIN)), 0)
    flows = net.flows()
    return [_say("INPUT", r) for r in rules[:at] if plan.could_block(describe(r), flows)]


@xtables.holding
def input_ensure(owner: str, net: plan.InputRules) -> dict[str, Any]:
    mark = OWNER_PREFIX + owner
    found = input_blockers(_filter(net.family), net)
    if found:
        raise AgentError(
            "blocked",
            f"{found[0]} runs before kvmnet's jump to {INPUT_CHAIN} and drops this network's "
            "DHCP/DNS; delete that rule or move it below kvmnet's jump, then run up again",
        )
    current = input_read(owner, net)
    if current["count"] and not current["problems"]:
        return current
    table = _filter(net.family)
    with xtables.transaction(table, "the DHCP/DNS input rules"):
        if not table.is_chain(INPUT_CHAIN):
            table.create_chain(INPUT_CHAIN)
        top = iptc.Chain(table, "INPUT")
        if not any(_is_jump(r, INPUT_CHAIN) for r in top.rules):
            top.insert_rule(_jump(INPUT_CHAIN, net.family), 0)
        _replace_marked(iptc.Chain(table, INPUT_CHAIN), mark, net.rules(), net.family)
    return input_read(owner, net)


@xtables.holding
def input_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    mark = OWNER_PREFIX + owner
    table = _filter(family)
    chain = _chain(table, INPUT_CHAIN)
    if chain is None:
        return {"removed": 0}
    with xtables.transaction(table, "the removal of the DHCP/DNS input rules"):
        removed, left = iptables_nat.drop_marked(chain, mark)
        if not left:  # no network's server is left: the chain and its jump go
            top = iptc.Chain(table, "INPUT")
            for rule in [r for r in top.rules if _is_jump(r, INPUT_CHAIN)]:
                top.delete_rule(rule)
            table.delete_chain(INPUT_CHAIN)
    return {"removed": removed}
