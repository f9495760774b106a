"""The nftables backend: libnftables' JSON API (python3-nftables / pip-nftables).

Never an `nft` command string: every change is a JSON document, applied as one transaction.
Layout (after libvirt's `table ip libvirt_network`, plus the one thing a private table
cannot do):
- `table ip kvmnet`, kvmnet's own: base chain `forward` (filter hook, priority -10, policy
  accept) jumping to `guest_cross`, `guest_input`, `guest_output` (fwplan's sections, with
  conntrack and REJECT); `postrouting` / `prerouting` (nat hooks) for MASQUERADE and DNAT
  (`[iifname IF] fib daddr type local tcp dport P dnat to GUEST:PORT`, or `ip daddr ADDR`
  instead of the fib match when a destination is given: only packets to the host itself).
- An accept in a private table cannot get a packet past a DROP in another table at the same
  hook. So when a forward base chain has policy drop (Docker, ufw: iptables-nft's `ip filter
  FORWARD`), or `ip filter FORWARD` exists, a regular chain `KVMNET_FWD` in THAT table holds
  the accepts (fwplan passes: only interface and address matches, which iptables-nft can still
  show) and is reached by one jump at the top of DOCKER-USER (when the base chain jumps there)
  or of the base chain. The private chains, at an earlier priority, have already rejected what
  the model refuses.
Rules carry the comment "kvmnet:<owner>", jumps "kvmnet"; what no network uses any more goes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import nftables  # type: ignore[import-not-found,import-untyped,unused-ignore]

from ..spec import validate
from . import fwplan
from .errors import AgentError
from .fwplan import Rule

NAME = "nftables"
MARK_PREFIX = "kvmnet:"
JUMP_MARK = "kvmnet"
FAMILY, TABLE = "ip", "kvmnet"
PASS = "KVMNET_FWD"
DOCKER_USER = "DOCKER-USER"
SECTIONS = {"cross": "guest_cross", "input": "guest_input", "output": "guest_output"}
BASE_CHAINS: dict[str, dict[str, Any]] = {
    "forward": {"type": "filter", "hook": "forward", "prio": -10, "policy": "accept"},
    "postrouting": {"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},
    "prerouting": {"type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"},
}
VERDICTS = {"accept", "drop", "reject"}

_nft: Any = None


def _lib() -> Any:
    global _nft
    if _nft is None:
        _nft = nftables.Nftables()
        _nft.set_json_output(True)
        _nft.set_handle_output(True)
    return _nft


def _run(commands: list[dict[str, Any]], doing: str) -> Any:
    if not commands:
        return None
    rc, out, err = _lib().json_cmd({"nftables": commands})
    if rc != 0:
        raise AgentError("failed", f"nftables refused {doing}: {str(err).strip()}")
    return out


# --- the ruleset, read once per operation ---------------------------------------------------
@dataclass
class NftRule:
    family: str
    table: str
    chain: str
    handle: int
    comment: str | None
    expr: list[dict[str, Any]]

    def ref(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "table": self.table,
            "chain": self.chain,
            "handle": self.handle,
        }


@dataclass
class Ruleset:
    chains: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    rules: dict[tuple[str, str, str], list[NftRule]] = field(default_factory=dict)
    tables: set[tuple[str, str]] = field(default_factory=set)

    def chain_rules(self, family: str, table: str, chain: str) -> list[NftRule]:
        return self.rules.get((family, table, chain), [])

    def forward_bases(self) -> list[dict[str, Any]]:
        return [
            c
            for c in self.chains.values()
            if c.get("hook") == "forward"
            and c["family"] in ("ip", "inet")
            and (c["family"], c["table"]) != (FAMILY, TABLE)
        ]


def ruleset() -> Ruleset:
    out = _run([{"list": {"ruleset": None}}], "a listing") or {}
    found = Ruleset()
    for item in out.get("nftables", []):
        if "table" in item:
            found.tables.add((item["table"]["family"], item["table"]["name"]))
        elif "chain" in item:
            c = item["chain"]
            found.chains[(c["family"], c["table"], c["name"])] = c
        elif "rule" in item:
            r = item["rule"]
            key = (r["family"], r["table"], r["chain"])
            found.rules.setdefault(key, []).append(
                NftRule(
                    r["family"],
                    r["table"],
                    r["chain"],
                    int(r["handle"]),
                    r.get("comment"),
                    r.get("expr", []),
                )
            )
    return found


# --- expressions ------------------------------------------------------------------------------
def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _ip(fieldname: str) -> dict[str, Any]:
    return {"payload": {"protocol": "ip", "field": fieldname}}


def _net(cidr: str) -> Any:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.prefixlen == 32:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _cidr_of(value: Any) -> str | None:
    if isinstance(value, str):
        return str(ipaddress.ip_network(value, strict=False))
    if isinstance(value, dict) and "prefix" in value:
        p = value["prefix"]
        return str(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
    return None


def rule_expr(rule: Rule) -> list[dict[str, Any]]:
    expr: list[dict[str, Any]] = []
    if rule.iif:
        expr.append(_match(_meta("iifname"), rule.iif))
    if rule.oif:
        expr.append(_match(_meta("oifname"), rule.oif))
    if rule.src:
        expr.append(_match(_ip("saddr"), _net(rule.src)))
    if rule.dst:
        expr.append(_match(_ip("daddr"), _net(rule.dst)))
    if rule.proto and rule.dport:
        expr.append(_match({"payload": {"protocol": rule.proto, "field": "dport"}}, rule.dport))
    if rule.ct == fwplan.CT_ESTABLISHED:
        expr.append(_match({"ct": {"key": "state"}}, ["established", "related"], "in"))
    elif rule.ct == fwplan.CT_DNAT:
        expr.append(_match({"ct": {"key": "status"}}, "dnat", "in"))
    expr.append({rule.verdict: None})
    return expr


def describe(expr: list[dict[str, Any]]) -> Rule | None:
    """Rule for an nft expression list, or None when it holds matches kvmnet does not read."""
    fields: dict[str, Any] = {}
    verdict = None
    for item in expr:
        if "counter" in item:
            continue
        ((key, value),) = item.items()
        if key in VERDICTS:
            verdict = key
            continue
        if key != "match" or value.get("op") not in ("==", "in"):
            return None
        left, right = value["left"], value["right"]
        if "meta" in left and left["meta"]["key"] in ("iifname", "oifname"):
            fields[left["meta"]["key"][:3]] = right
        elif "meta" in left and left["meta"]["key"] == "l4proto":
            fields["proto"] = right
        elif "payload" in left and left["payload"].get("protocol") == "ip":
            name = {"saddr": "src", "daddr": "dst"}.get(left["payload"]["field"])
            if name is None or _cidr_of(right) is None:
                return None
            fields[name] = fwplan.cidr(_cidr_of(right))
        elif "payload" in left and left["payload"].get("field") == "dport":
            fields["proto"] = left["payload"]["protocol"]
            fields["dport"] = int(right)
        elif "ct" in left and left["ct"]["key"] == "state":
            states = sorted(right if isinstance(right, list) else [right])
            if states != ["established", "related"]:
                return None
            fields["ct"] = fwplan.CT_ESTABLISHED
        elif "ct" in left and left["ct"]["key"] == "status" and right in ("dnat", ["dnat"]):
            fields["ct"] = fwplan.CT_DNAT
        else:
            return None
    if verdict is None:
        return None
    return Rule(verdict, **fields)


def _text(rule: NftRule) -> str:
    described = describe(rule.expr)
    body = described.text() if described else "(rule)"
    return (
        f"table {rule.family} {rule.table} chain {rule.chain} handle {rule.handle} "
        f"'{body}' (nftables)"
    )


# --- where the pass chain goes ----------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    family: str
    table: str
    base: str
    jump_chain: str  # DOCKER-USER or the base chain


def placement(rs: Ruleset) -> Placement | None:
    """The table whose forward base chain holds the host's DROP (or iptables-nft's filter)."""
    bases = rs.forward_bases()
    drop = [c for c in bases if c.get("policy") == "drop"]
    filt = [c for c in bases if (c["family"], c["table"], c["name"]) == ("ip", "filter", "FORWARD")]
    candidates = drop or filt
    if not candidates:
        return None
    chosen = candidates[0]
    family, table, base = chosen["family"], chosen["table"], chosen["name"]
    jump_chain = base
    if (family, table, DOCKER_USER) in rs.chains and any(
        _jumps_to(r, DOCKER_USER) for r in rs.chain_rules(family, table, base)
    ):
        jump_chain = DOCKER_USER
    return Placement(family, table, base, jump_chain)


def _jumps_to(rule: NftRule, target: str) -> bool:
    return any(
        ("jump" in e and e["jump"]["target"] == target)
        or ("goto" in e and e["goto"]["target"] == target)
        for e in rule.expr
    )


def _is_our_jump(rule: NftRule, target: str) -> bool:
    return rule.comment == JUMP_MARK and _jumps_to(rule, target)


def _all_pass_chains(rs: Ruleset) -> list[tuple[str, str]]:
    return [(f, t) for (f, t, n) in rs.chains if n == PASS]


# --- forward rules ----------------------------------------------------------------------------
def _ours(rs: Ruleset, mark: str) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for section, chain in SECTIONS.items():
        rules = [r for r in rs.chain_rules(FAMILY, TABLE, chain) if r.comment == mark]
        found[section] = [_wire(r) for r in rules]
    passes = []
    for family, table in _all_pass_chains(rs):
        passes += [_wire(r) for r in rs.chain_rules(family, table, PASS) if r.comment == mark]
    found["pass"] = passes
    return found


def _wire(rule: NftRule) -> dict[str, object]:
    described = describe(rule.expr)
    return described.to_wire() if described else {"unknown": True}


def _want(net: fwplan.NetworkRules, where: Placement | None) -> dict[str, list[dict[str, object]]]:
    want = {s: [r.to_wire() for r in rules] for s, rules in net.sections().items()}
    want["pass"] = [r.to_wire() for r in net.passes()] if where else []
    return want


def _jump_location(rs: Ruleset) -> tuple[str, str, str, int] | None:
    for (family, table, chain), rules in rs.rules.items():
        for index, rule in enumerate(rules):
            if _is_our_jump(rule, PASS):
                return family, table, chain, index
    return None


def forward_read(owner: str, net: fwplan.NetworkRules | None = None) -> dict[str, Any]:
    mark = MARK_PREFIX + validate.owner(owner)
    rs = ruleset()
    where = placement(rs)
    sections = _ours(rs, mark)
    count = sum(len(v) for v in sections.values())
    problems = []
    if count:
        base = rs.chain_rules(FAMILY, TABLE, "forward")
        if [r.expr[-1].get("jump", {}).get("target") for r in base] != list(SECTIONS.values()):
            problems.append(f"table {FAMILY} {TABLE} chain forward lost its jumps")
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


def blockers(rs: Ruleset, net: fwplan.NetworkRules) -> list[str]:
    flows = net.flows()
    where = placement(rs)
    found = []
    for base in rs.forward_bases():
        key = (base["family"], base["table"], base["name"])
        if where is not None and key == (where.family, where.table, where.base):
            continue
        rules = rs.chain_rules(*key)
        if base.get("policy") == "drop":
            found.append(f"table {key[0]} {key[1]} chain {key[2]} (policy drop)")
        found += [_text(r) for r in rules if fwplan.could_block(describe(r.expr), flows)]
    if where is None:
        return found
    base_rules = rs.chain_rules(where.family, where.table, where.base)
    if where.jump_chain == DOCKER_USER:
        cut = next(i for i, r in enumerate(base_rules) if _jumps_to(r, DOCKER_USER))
        found += [_text(r) for r in base_rules[:cut] if fwplan.could_block(describe(r.expr), flows)]
    jump = _jump_location(rs)
    if jump is not None and jump[:3] == (where.family, where.table, where.jump_chain):
        before = rs.chain_rules(*jump[:3])[: jump[3]]
        found += [_text(r) for r in before if fwplan.could_block(describe(r.expr), flows)]
    return found


def _base_chain_commands() -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name, spec in BASE_CHAINS.items():
        commands.append(
            {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name, **spec}}}
        )
    return commands


def _rule(family: str, table: str, chain: str, comment: str, expr: list[Any]) -> dict[str, Any]:
    return {"family": family, "table": table, "chain": chain, "comment": comment, "expr": expr}


def forward_ensure(owner: str, net: fwplan.NetworkRules) -> dict[str, Any]:
    mark = MARK_PREFIX + validate.owner(owner)
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
    where = placement(rs)
    commands = _base_chain_commands()
    for chain in SECTIONS.values():
        commands.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}})
    base = rs.chain_rules(FAMILY, TABLE, "forward")
    if [r.expr[-1].get("jump", {}).get("target") for r in base] != list(SECTIONS.values()):
        commands.append({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": "forward"}}})
        for chain in SECTIONS.values():
            commands.append(
                {
                    "add": {
                        "rule": _rule(
                            FAMILY, TABLE, "forward", JUMP_MARK, [{"jump": {"target": chain}}]
                        )
                    }
                }
            )
    # This owner's old rules go, wherever they are; the new ones are appended.
    for chain in SECTIONS.values():
        for r in rs.chain_rules(FAMILY, TABLE, chain):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
    for family, table in _all_pass_chains(rs):
        for r in rs.chain_rules(family, table, PASS):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
    for section, planned in net.sections().items():
        for rule in planned:
            commands.append(
                {"add": {"rule": _rule(FAMILY, TABLE, SECTIONS[section], mark, rule_expr(rule))}}
            )
    if where is not None:
        commands.append(
            {"add": {"chain": {"family": where.family, "table": where.table, "name": PASS}}}
        )
        for (family, table, chain), existing in rs.rules.items():
            for r in existing:  # a jump in the wrong place (DOCKER-USER appeared since) moves
                if _is_our_jump(r, PASS) and (family, table, chain) != (
                    where.family,
                    where.table,
                    where.jump_chain,
                ):
                    commands.append({"delete": {"rule": r.ref()}})
        placed = rs.chain_rules(where.family, where.table, where.jump_chain)
        if not any(_is_our_jump(r, PASS) for r in placed):
            commands.append(
                {
                    "insert": {
                        "rule": _rule(
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
            commands.append(
                {"add": {"rule": _rule(where.family, where.table, PASS, mark, rule_expr(rule))}}
            )
    _run(commands, "the forward rules")
    return forward_read(owner, net)


def _remove_marked(chains: list[tuple[str, str, str]], mark: str) -> int:
    rs = ruleset()
    commands = []
    for key in chains:
        for r in rs.chain_rules(*key):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
    _run(commands, "the removal")
    _tidy()
    return len(commands)


def _tidy() -> None:
    """Remove the pass chains and their jumps when no network uses them, and kvmnet's table
    when no rule of any owner is left in it."""
    rs = ruleset()
    commands: list[dict[str, Any]] = []
    network_rules = sum(len(rs.chain_rules(FAMILY, TABLE, c)) for c in SECTIONS.values())
    passes = _all_pass_chains(rs)
    pass_rules = sum(len(rs.chain_rules(f, t, PASS)) for f, t in passes)
    if not network_rules and not pass_rules:
        for rules in rs.rules.values():
            for r in rules:
                if _is_our_jump(r, PASS):
                    commands.append({"delete": {"rule": r.ref()}})
        for family, table in passes:
            commands.append({"delete": {"chain": {"family": family, "table": table, "name": PASS}}})
    nat_rules = sum(len(rs.chain_rules(FAMILY, TABLE, c)) for c in ("postrouting", "prerouting"))
    input_rules = len(rs.chain_rules(FAMILY, TABLE, INPUT_PASS))
    if (FAMILY, TABLE) in rs.tables and not (network_rules or nat_rules or input_rules):
        commands.append({"delete": {"table": {"family": FAMILY, "name": TABLE}}})
    _run(commands, "the tidy-up")


def forward_remove(owner: str) -> dict[str, Any]:
    mark = MARK_PREFIX + validate.owner(owner)
    rs = ruleset()
    chains = [(FAMILY, TABLE, c) for c in SECTIONS.values()]
    chains += [(f, t, PASS) for f, t in _all_pass_chains(rs)]
    return {"removed": _remove_marked(chains, mark)}


# --- INPUT: what a network's DHCP/DNS server needs (fwplan.InputRules) ------------------------
# A regular chain KVMNET_INP holds the owners' accepts, reached by one jump (comment "kvmnet")
# at the top of the input base chain that holds the host's DROP policy (or iptables-nft's
# `ip filter INPUT`); with neither, of kvmnet's own base chain `input` (policy accept).
INPUT_PASS = "KVMNET_INP"
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


def input_read(owner: str, net: fwplan.InputRules | None = None) -> dict[str, Any]:
    mark = MARK_PREFIX + validate.owner(owner)
    rs = ruleset()
    rules: list[dict[str, object]] = []
    for family, table in _input_chains(rs):
        rules += [_wire(r) for r in rs.chain_rules(family, table, INPUT_PASS) if r.comment == mark]
    where = input_placement(rs)
    jump = any(_is_our_jump(r, INPUT_PASS) for r in rs.chain_rules(*where))
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


def input_blockers(rs: Ruleset, net: fwplan.InputRules) -> list[str]:
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
            _text(r) for r in rs.chain_rules(*key) if fwplan.could_block(describe(r.expr), flows)
        ]
    rules = rs.chain_rules(*where)
    at = next((i for i, r in enumerate(rules) if _is_our_jump(r, INPUT_PASS)), 0)
    found += [_text(r) for r in rules[:at] if fwplan.could_block(describe(r.expr), flows)]
    return found


def input_ensure(owner: str, net: fwplan.InputRules) -> dict[str, Any]:
    mark = MARK_PREFIX + validate.owner(owner)
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
            if _is_our_jump(r, INPUT_PASS) and key != (family, table, base):
                commands.append({"delete": {"rule": r.ref()}})
    if not any(_is_our_jump(r, INPUT_PASS) for r in rs.chain_rules(family, table, base)):
        jump = [{"jump": {"target": INPUT_PASS}}]
        commands.append({"insert": {"rule": _rule(family, table, base, JUMP_MARK, jump)}})
    for f, t in _input_chains(rs):  # this owner's old rules go, wherever they are
        for r in rs.chain_rules(f, t, INPUT_PASS):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
    for rule in net.rules():
        commands.append({"add": {"rule": _rule(family, table, INPUT_PASS, mark, rule_expr(rule))}})
    _run(commands, "the DHCP/DNS input rules")
    return input_read(owner, net)


def input_remove(owner: str) -> dict[str, Any]:
    mark = MARK_PREFIX + validate.owner(owner)
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
                if _is_our_jump(r, INPUT_PASS):
                    commands.append({"delete": {"rule": r.ref()}})
        for family, table in _input_chains(rs):
            commands.append(
                {"delete": {"chain": {"family": family, "table": table, "name": INPUT_PASS}}}
            )
        if (FAMILY, TABLE, "input") in rs.chains:
            commands.append(
                {"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": "input"}}}
            )
    _run(commands, "the removal of the DHCP/DNS input rules")
    _tidy()
    return {"removed": removed}


# --- MASQUERADE and DNAT ------------------------------------------------------------------------
def _nat_rules(chain: str, owner: str) -> list[NftRule]:
    mark = MARK_PREFIX + validate.owner(owner)
    return [r for r in ruleset().chain_rules(FAMILY, TABLE, chain) if r.comment == mark]


def _describe_masquerade(rule: NftRule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": None,
        "destination_excluded": False,
        "destination": None,
        "out_interface": None,
        "target": None,
    }
    for item in rule.expr:
        if "masquerade" in item:
            out["target"] = "MASQUERADE"
        m = item.get("match")
        if not m:
            continue
        left = m["left"]
        if left.get("payload", {}).get("field") == "saddr":
            out["source"] = _cidr_of(m["right"])
        elif left.get("payload", {}).get("field") == "daddr":
            out["destination"] = _cidr_of(m["right"])
            out["destination_excluded"] = m["op"] == "!="
        elif left.get("meta", {}).get("key") == "oifname":
            out["out_interface"] = m["right"]
    return out


def _read(chain: str, owner: str, describe_one: Any) -> dict[str, Any]:
    rules = [describe_one(r) for r in _nat_rules(chain, owner)]
    return {"rules": rules, "count": len(rules), "backend": NAME}


def masquerade_read(owner: str) -> dict[str, Any]:
    return _read("postrouting", owner, _describe_masquerade)


def _nat_ensure(
    chain: str, owner: str, want: dict[str, Any], expr: list[Any], describe_one: Any
) -> dict[str, Any]:
    current = _read(chain, owner, describe_one)
    if current["rules"] == [want]:
        return current
    mark = MARK_PREFIX + owner
    commands = _base_chain_commands()
    commands += [{"delete": {"rule": r.ref()}} for r in _nat_rules(chain, owner)]
    commands.append({"add": {"rule": _rule(FAMILY, TABLE, chain, mark, expr)}})
    _run(commands, f"the {chain} rule")
    return _read(chain, owner, describe_one)


def masquerade_ensure(spec: dict[str, Any]) -> dict[str, Any]:
    owner, want = fwplan.masquerade_want(spec)
    source, out_if = want["source"], want["out_interface"]
    expr = [_match(_ip("saddr"), _net(source)), _match(_ip("daddr"), _net(source), "!=")]
    if out_if:
        expr.append(_match(_meta("oifname"), out_if))
    expr.append({"masquerade": None})
    return _nat_ensure("postrouting", owner, want, expr, _describe_masquerade)


def masquerade_remove(owner: str) -> dict[str, Any]:
    return {
        "removed": _remove_marked(
            [(FAMILY, TABLE, "postrouting")], MARK_PREFIX + validate.owner(owner)
        )
    }


def _is_fib_daddr_type(left: dict[str, Any]) -> bool:
    fib = left.get("fib")
    if not isinstance(fib, dict) or fib.get("result") != "type":
        return False
    flags = fib.get("flags")
    return (flags if isinstance(flags, list) else [flags]) == ["daddr"]


def describe_dnat(expr: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "protocol": None,
        "in_interface": None,
        "destination": None,
        "dst_type": None,
        "host_port": None,
        "to": None,
        "target": None,
    }
    for item in expr:
        if "dnat" in item:
            out["target"] = "DNAT"
            out["to"] = f"{item['dnat'].get('addr')}:{item['dnat'].get('port')}"
        m = item.get("match")
        if not m:
            continue
        left = m["left"]
        if left.get("payload", {}).get("field") == "dport":
            out["protocol"] = left["payload"]["protocol"]
            out["host_port"] = int(m["right"])
        elif left.get("payload", {}).get("field") == "daddr":
            out["destination"] = str(m["right"])
        elif left.get("meta", {}).get("key") == "iifname":
            out["in_interface"] = m["right"]
        elif "fib" in left:  # exactly `fib daddr type local` is ours; any other is not
            ours = _is_fib_daddr_type(left) and m["op"] == "==" and m["right"] == "local"
            out["dst_type"] = fwplan.DST_LOCAL if ours else "other"
    return out


def _describe_dnat(rule: NftRule) -> dict[str, Any]:
    return describe_dnat(rule.expr)


def dnat_expr(want: dict[str, Any]) -> list[dict[str, Any]]:
    """The nft expressions of fwplan.dnat_want's rule."""
    expr: list[dict[str, Any]] = []
    if want["in_interface"]:
        expr.append(_match(_meta("iifname"), want["in_interface"]))
    if want["destination"]:
        expr.append(_match(_ip("daddr"), want["destination"]))
    if want["dst_type"] == fwplan.DST_LOCAL:
        expr.append(_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"))
    port = {"payload": {"protocol": want["protocol"], "field": "dport"}}
    expr.append(_match(port, want["host_port"]))
    address, _, guest_port = str(want["to"]).rpartition(":")
    expr.append({"dnat": {"addr": address, "port": int(guest_port)}})
    return expr


def dnat_read(owner: str) -> dict[str, Any]:
    return _read("prerouting", owner, _describe_dnat)


def dnat_ensure(spec: dict[str, Any]) -> dict[str, Any]:
    """A rule of an older shape (before the fib match) carries the same comment: it reads
    unequal to `want`, so _nat_ensure deletes it and adds this one in one transaction."""
    owner, want = fwplan.dnat_want(spec)
    return _nat_ensure("prerouting", owner, want, dnat_expr(want), _describe_dnat)


def dnat_remove(owner: str) -> dict[str, Any]:
    return {
        "removed": _remove_marked(
            [(FAMILY, TABLE, "prerouting")], MARK_PREFIX + validate.owner(owner)
        )
    }
