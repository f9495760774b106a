"""What the nftables backend's rule kinds share: the ruleset as read, rules as expressions, and
the edits every kind makes (base chains, removal of an owner's rules, the tidy-up).

Never an `nft` command string: every change is a JSON document for libnftables, applied as
one transaction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import nftables  # type: ignore[import-not-found,import-untyped,unused-ignore]

from ...spec.family import IPV4, Family
from ...spec.marks import JUMP_MARK
from ..errors import AgentError
from . import plan
from .plan import Rule

NAME = "nftables"
FAMILY, TABLE = IPV4.nft, "kvmnet"  # FAMILY: the table family of IPv4, the default
PASS = "KVMNET_FWD"  # the forward accepts' chain in the host's table
INPUT_PASS = "KVMNET_INP"  # the DHCP/DNS accepts' chain
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


def run(commands: list[dict[str, Any]], doing: str) -> Any:
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

    def forward_bases(self, family: Family = IPV4) -> list[dict[str, Any]]:
        return [
            c
            for c in self.chains.values()
            if c.get("hook") == "forward"
            and c["family"] in (family.nft, "inet")
            and (c["family"], c["table"]) != (family.nft, TABLE)
        ]


# firewalld's own table: its base chains end in a catch-all reject that stands for its zones'
# decisions. Not a rule an operator deletes: kvmnet's pass chains go into that table, their
# jump at the top of its base chain, as they go where a DROP policy is. firewalld's reload
# makes its table anew without them: refresh shows it, up puts them back.
FIREWALLD = ("inet", "firewalld")


def managed_by_firewalld(family: str, table: str) -> bool:
    return (family, table) == FIREWALLD


def firewalld_filters(bases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The filter base chains among `bases` that are firewalld's own."""
    return [
        c
        for c in bases
        if managed_by_firewalld(c["family"], c["table"]) and c.get("type") == "filter"
    ]


def ruleset() -> Ruleset:
    out = run([{"list": {"ruleset": None}}], "a listing") or {}
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
def match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def ip_field(fieldname: str, family: Family = IPV4) -> dict[str, Any]:
    return {"payload": {"protocol": family.nft, "field": fieldname}}


def net_value(cidr: str) -> Any:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.prefixlen == net.max_prefixlen:  # one address: written without a prefix
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def cidr_of(value: Any) -> str | None:
    if isinstance(value, str):
        return str(ipaddress.ip_network(value, strict=False))
    if isinstance(value, dict) and "prefix" in value:
        p = value["prefix"]
        return str(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
    return None


def rule_expr(rule: Rule, family: Family = IPV4) -> list[dict[str, Any]]:
    expr: list[dict[str, Any]] = []
    if rule.iif:
        expr.append(match(meta("iifname"), rule.iif))
    if rule.oif:
        expr.append(match(meta("oifname"), rule.oif))
    if rule.src:
        expr.append(match(ip_field("saddr", family), net_value(rule.src)))
    if rule.dst:
        expr.append(match(ip_field("daddr", family), net_value(rule.dst)))
    if rule.proto and rule.dport:
        expr.append(match({"payload": {"protocol": rule.proto, "field": "dport"}}, rule.dport))
    if rule.ct == plan.CT_ESTABLISHED:
        expr.append(match({"ct": {"key": "state"}}, ["established", "related"], "in"))
    elif rule.ct == plan.CT_DNAT:
        expr.append(match({"ct": {"key": "status"}}, "dnat", "in"))
    expr.append({rule.verdict: None})
    return expr


def describe(expr: list[dict[str, Any]], family: Family = IPV4) -> Rule | None:
    """Rule for an nft expression list, or None when it holds matches kvmnet does not read
    (another family's addresses among them)."""
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
        elif "payload" in left and left["payload"].get("protocol") == family.nft:
            name = {"saddr": "src", "daddr": "dst"}.get(left["payload"]["field"])
            if name is None or cidr_of(right) is None:
                return None
            fields[name] = plan.cidr(cidr_of(right))
        elif "payload" in left and left["payload"].get("field") == "dport":
            fields["proto"] = left["payload"]["protocol"]
            fields["dport"] = int(right)
        elif "ct" in left and left["ct"]["key"] == "state":
            states = sorted(right if isinstance(right, list) else [right])
            if states != ["established", "related"]:
                return None
            fields["ct"] = plan.CT_ESTABLISHED
        elif "ct" in left and left["ct"]["key"] == "status" and right in ("dnat", ["dnat"]):
            fields["ct"] = plan.CT_DNAT
        else:
            return None
    if verdict is None:
        return None
    return Rule(verdict, **fields)


def text(rule: NftRule, family: Family = IPV4) -> str:
    described = describe(rule.expr, family)
    body = described.text() if described else "(rule)"
    return (
        f"table {rule.family} {rule.table} chain {rule.chain} handle {rule.handle} "
        f"'{body}' (nftables)"
    )


def jumps_to(rule: NftRule, target: str) -> bool:
    return any(
        ("jump" in e and e["jump"]["target"] == target)
        or ("goto" in e and e["goto"]["target"] == target)
        for e in rule.expr
    )


def is_our_jump(rule: NftRule, target: str) -> bool:
    return rule.comment == JUMP_MARK and jumps_to(rule, target)


def pass_chains(rs: Ruleset) -> list[tuple[str, str]]:
    return [(f, t) for (f, t, n) in rs.chains if n == PASS]


def wire(rule: NftRule, family: Family = IPV4) -> dict[str, object]:
    described = describe(rule.expr, family)
    return described.to_wire() if described else {"unknown": True}


def base_chain_commands(family: Family = IPV4) -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = [{"add": {"table": {"family": family.nft, "name": TABLE}}}]
    for name, spec in BASE_CHAINS.items():
        commands.append(
            {"add": {"chain": {"family": family.nft, "table": TABLE, "name": name, **spec}}}
        )
    return commands


def rule_doc(family: str, table: str, chain: str, comment: str, expr: list[Any]) -> dict[str, Any]:
    return {"family": family, "table": table, "chain": chain, "comment": comment, "expr": expr}


def remove_marked(chains: list[tuple[str, str, str]], mark: str, family: Family = IPV4) -> int:
    rs = ruleset()
    commands = []
    for key in chains:
        for r in rs.chain_rules(*key):
            if r.comment == mark:
                commands.append({"delete": {"rule": r.ref()}})
    run(commands, "the removal")
    tidy(family)
    return len(commands)


def tidy(family: Family = IPV4) -> None:
    """Remove the pass chains and their jumps when no network uses them, and kvmnet's table
    when no rule of any owner is left in it."""
    rs = ruleset()
    commands: list[dict[str, Any]] = []
    ours = family.nft
    network_rules = sum(len(rs.chain_rules(ours, TABLE, c)) for c in SECTIONS.values())
    passes = pass_chains(rs)
    pass_rules = sum(len(rs.chain_rules(f, t, PASS)) for f, t in passes)
    if not network_rules and not pass_rules:
        for rules in rs.rules.values():
            for r in rules:
                if is_our_jump(r, PASS):
                    commands.append({"delete": {"rule": r.ref()}})
        for chain_family, table in passes:
            commands.append(
                {"delete": {"chain": {"family": chain_family, "table": table, "name": PASS}}}
            )
    nat_rules = sum(len(rs.chain_rules(ours, TABLE, c)) for c in ("postrouting", "prerouting"))
    input_rules = len(rs.chain_rules(ours, TABLE, INPUT_PASS))
    if (ours, TABLE) in rs.tables and not (network_rules or nat_rules or input_rules):
        commands.append({"delete": {"table": {"family": ours, "name": TABLE}}})
    run(commands, "the tidy-up")
