"""MASQUERADE and DNAT (port forwards) in nftables: kvmnet's postrouting and prerouting chains."""

from __future__ import annotations

from typing import Any

from ...spec import validate
from ...spec.family import IPV4, Family
from ...spec.family import of as family_of
from ...spec.marks import OWNER_PREFIX
from . import plan
from .nft_rules import (
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
def _nat_rules(chain: str, owner: str, family: Family = IPV4) -> list[NftRule]:
    mark = OWNER_PREFIX + validate.owner(owner)
    return [r for r in ruleset().chain_rules(family.nft, TABLE, chain) if r.comment == mark]


def _ports(masquerade: Any) -> str | None:
    """`1024-65535` for `masquerade to :1024-65535`; None for a plain masquerade."""
    port = masquerade.get("port") if isinstance(masquerade, dict) else None
    if isinstance(port, dict) and "range" in port:
        low, high = port["range"]
        return f"{low}-{high}"
    return None if port is None else str(port)


def _describe_masquerade(rule: NftRule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": None,
        "destination_excluded": False,
        "destination": None,
        "out_interface": None,
        "protocol": None,
        "to_ports": None,
        "target": None,
    }
    for item in rule.expr:
        if "masquerade" in item:
            out["target"] = "MASQUERADE"
            out["to_ports"] = _ports(item["masquerade"])
        elif "return" in item:
            out["target"] = "RETURN"
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
        elif left.get("meta", {}).get("key") == "l4proto":
            out["protocol"] = str(m["right"])
    return out


def _read(chain: str, owner: str, describe_one: Any, family: Family = IPV4) -> dict[str, Any]:
    rules = [describe_one(r) for r in _nat_rules(chain, owner, family)]
    return {"rules": rules, "count": len(rules), "backend": NAME}


def masquerade_read(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return _read("postrouting", owner, _describe_masquerade, family)


def _nat_ensure(
    chain: str,
    owner: str,
    want: list[dict[str, Any]],
    exprs: list[list[Any]],
    describe_one: Any,
    family: Family = IPV4,
) -> dict[str, Any]:
    """Exactly the rules of ours in `want` (made of `exprs`), in order: kept if they are, else
    the owner's rules (an older shape among them) are replaced in one transaction."""
    current = _read(chain, owner, describe_one, family)
    if current["rules"] == want:
        return current
    mark = OWNER_PREFIX + owner
    commands = base_chain_commands(family)
    commands += [{"delete": {"rule": r.ref()}} for r in _nat_rules(chain, owner, family)]
    commands += [{"add": {"rule": rule_doc(family.nft, TABLE, chain, mark, e)}} for e in exprs]
    run(commands, f"the {chain} rules")
    return _read(chain, owner, describe_one, family)


def masquerade_expr(want: dict[str, Any], family: Family = IPV4) -> list[dict[str, Any]]:
    """The nft expressions of one of plan.masquerade_want's rules."""
    expr: list[dict[str, Any]] = []
    if want["protocol"]:
        expr.append(match(meta("l4proto"), want["protocol"]))
    expr.append(match(ip_field("saddr", family), net_value(want["source"])))
    op = "!=" if want["destination_excluded"] else "=="
    expr.append(match(ip_field("daddr", family), net_value(want["destination"]), op))
    if want["out_interface"]:
        expr.append(match(meta("oifname"), want["out_interface"]))
    if want["target"] == "RETURN":
        expr.append({"return": None})
    elif want["to_ports"]:
        low, high = (int(p) for p in str(want["to_ports"]).split("-"))
        expr.append({"masquerade": {"port": {"range": [low, high]}}})
    else:
        expr.append({"masquerade": None})
    return expr


def masquerade_ensure(spec: dict[str, Any], family: Family = IPV4) -> dict[str, Any]:
    owner, want = plan.masquerade_want(spec, family)
    exprs = [masquerade_expr(w, family) for w in want]
    return _nat_ensure("postrouting", owner, want, exprs, _describe_masquerade, family)


def masquerade_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return {
        "removed": remove_marked(
            [(family.nft, TABLE, "postrouting")], OWNER_PREFIX + validate.owner(owner), family
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
            address = str(item["dnat"].get("addr"))
            out["to"] = family_of(address).endpoint(address, item["dnat"].get("port"))
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


def dnat_expr(want: dict[str, Any], family: Family = IPV4) -> list[dict[str, Any]]:
    """The nft expressions of plan.dnat_want's rule."""
    expr: list[dict[str, Any]] = []
    if want["in_interface"]:
        expr.append(match(meta("iifname"), want["in_interface"]))
    if want["destination"]:
        expr.append(match(ip_field("daddr", family), want["destination"]))
    if want["dst_type"] == plan.DST_LOCAL:
        expr.append(match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"))
    port = {"payload": {"protocol": want["protocol"], "field": "dport"}}
    expr.append(match(port, want["host_port"]))
    address, _, guest_port = str(want["to"]).rpartition(":")
    expr.append({"dnat": {"addr": address.strip("[]"), "port": int(guest_port)}})
    return expr


def dnat_read(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return _read("prerouting", owner, _describe_dnat, family)


def dnat_ensure(spec: dict[str, Any], family: Family = IPV4) -> dict[str, Any]:
    """A rule of another shape with the same comment (one without the fib match, say) reads
    unequal to `want`, so _nat_ensure deletes it and adds this one in one transaction."""
    owner, want = plan.dnat_want(spec, family)
    exprs = [dnat_expr(want, family)]
    return _nat_ensure("prerouting", owner, [want], exprs, _describe_dnat, family)


def dnat_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return {
        "removed": remove_marked(
            [(family.nft, TABLE, "prerouting")], OWNER_PREFIX + validate.owner(owner), family
        )
    }
