"""MASQUERADE and DNAT (port forwards) in nftables: kvmnet's postrouting and prerouting chains."""

from __future__ import annotations

from typing import Any

from ...spec import validate
from ...spec.marks import OWNER_PREFIX
from . import plan
from .nft_rules import (
    FAMILY,
    NAME,
    TABLE,
    NftRule,
    base_chain_commands,
    cidr_of,
    ip_field,
    match,
    meta,
    net_value,
    remove_marked,
    rule_doc,
    ruleset,
    run,
)


# --- MASQUERADE and DNAT ------------------------------------------------------------------------
def _nat_rules(chain: str, owner: str) -> list[NftRule]:
    mark = OWNER_PREFIX + validate.owner(owner)
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
            out["source"] = cidr_of(m["right"])
        elif left.get("payload", {}).get("field") == "daddr":
            out["destination"] = cidr_of(m["right"])
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
    mark = OWNER_PREFIX + owner
    commands = base_chain_commands()
    commands += [{"delete": {"rule": r.ref()}} for r in _nat_rules(chain, owner)]
    commands.append({"add": {"rule": rule_doc(FAMILY, TABLE, chain, mark, expr)}})
    run(commands, f"the {chain} rule")
    return _read(chain, owner, describe_one)


def masquerade_ensure(spec: dict[str, Any]) -> dict[str, Any]:
    owner, want = plan.masquerade_want(spec)
    source, out_if = want["source"], want["out_interface"]
    expr = [
        match(ip_field("saddr"), net_value(source)),
        match(ip_field("daddr"), net_value(source), "!="),
    ]
    if out_if:
        expr.append(match(meta("oifname"), out_if))
    expr.append({"masquerade": None})
    return _nat_ensure("postrouting", owner, want, expr, _describe_masquerade)


def masquerade_remove(owner: str) -> dict[str, Any]:
    return {
        "removed": remove_marked(
            [(FAMILY, TABLE, "postrouting")], OWNER_PREFIX + validate.owner(owner)
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
            out["dst_type"] = plan.DST_LOCAL if ours else "other"
    return out


def _describe_dnat(rule: NftRule) -> dict[str, Any]:
    return describe_dnat(rule.expr)


def dnat_expr(want: dict[str, Any]) -> list[dict[str, Any]]:
    """The nft expressions of plan.dnat_want's rule."""
    expr: list[dict[str, Any]] = []
    if want["in_interface"]:
        expr.append(match(meta("iifname"), want["in_interface"]))
    if want["destination"]:
        expr.append(match(ip_field("daddr"), want["destination"]))
    if want["dst_type"] == plan.DST_LOCAL:
        expr.append(match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"))
    port = {"payload": {"protocol": want["protocol"], "field": "dport"}}
    expr.append(match(port, want["host_port"]))
    address, _, guest_port = str(want["to"]).rpartition(":")
    expr.append({"dnat": {"addr": address, "port": int(guest_port)}})
    return expr


def dnat_read(owner: str) -> dict[str, Any]:
    return _read("prerouting", owner, _describe_dnat)


def dnat_ensure(spec: dict[str, Any]) -> dict[str, Any]:
    """A rule of another shape with the same comment (one without the fib match, say) reads
    unequal to `want`, so _nat_ensure deletes it and adds this one in one transaction."""
    owner, want = plan.dnat_want(spec)
    return _nat_ensure("prerouting", owner, want, dnat_expr(want), _describe_dnat)


def dnat_remove(owner: str) -> dict[str, Any]:
    return {
        "removed": remove_marked(
            [(FAMILY, TABLE, "prerouting")], OWNER_PREFIX + validate.owner(owner)
        )
    }
