"""NAT rules through python-iptables (legacy x_tables), each marked as ours.

A rule carries the comment "kvmnet:<owner>". Removal deletes exactly the rules carrying
that comment in the chain we put them in: other rules, ours or anybody's, stay. (The
tutorial's `iptables -t nat -F` is the bug we do not repeat.)
"""

from __future__ import annotations

import ipaddress
from typing import Any

import iptc  # type: ignore[import-untyped]

from . import validate
from .errors import AgentError

MARK_PREFIX = "kvmnet:"


def _netmask_form(cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    return f"{net.network_address}/{net.netmask}"


def _cidr_form(value: str) -> str:
    return str(ipaddress.ip_network(value.lstrip("!"), strict=False))


def _comment(rule: Any) -> str | None:
    for match in rule.matches:
        if match.name == "comment":
            return str(match.comment)
    return None


def _postrouting() -> tuple[Any, Any]:
    table = iptc.Table(iptc.Table.NAT)
    table.refresh()
    return table, iptc.Chain(table, "POSTROUTING")


def _describe(rule: Any) -> dict[str, Any]:
    return {
        "source": _cidr_form(rule.src),
        "destination_excluded": rule.dst.startswith("!"),
        "destination": _cidr_form(rule.dst),
        "out_interface": rule.out_interface,
        "target": rule.target.name,
    }


def masquerade_read(owner: str) -> dict[str, Any]:
    mark = MARK_PREFIX + validate.owner(owner)
    _, chain = _postrouting()
    rules = [_describe(r) for r in chain.rules if _comment(r) == mark]
    return {"rules": rules, "count": len(rules)}


def masquerade_ensure(spec: dict[str, Any]) -> dict[str, Any]:
    """Make exactly one rule `-s NET ! -d NET [-o IF] -m comment -j MASQUERADE` for owner."""
    owner = validate.owner(spec["owner"])
    source = validate.network(spec["source"])
    out_if = validate.ifname(spec["out_interface"]) if spec.get("out_interface") else None
    want = {
        "source": source,
        "destination_excluded": True,
        "destination": source,
        "out_interface": out_if,
        "target": "MASQUERADE",
    }
    live = masquerade_read(owner)["rules"]
    if live == [want]:
        return masquerade_read(owner)
    masquerade_remove(owner)
    table, chain = _postrouting()
    rule = iptc.Rule()
    rule.src = _netmask_form(source)
    rule.dst = "!" + _netmask_form(source)
    if out_if:
        rule.out_interface = out_if
    rule.create_match("comment").comment = MARK_PREFIX + owner
    rule.create_target("MASQUERADE")
    try:
        chain.append_rule(rule)
    except iptc.IPTCError as exc:
        raise AgentError("failed", f"iptables refused the MASQUERADE rule: {exc}") from None
    return masquerade_read(owner)


def masquerade_remove(owner: str) -> dict[str, Any]:
    mark = MARK_PREFIX + validate.owner(owner)
    table, chain = _postrouting()
    removed = 0
    table.autocommit = False
    try:
        for rule in list(chain.rules):
            if _comment(rule) == mark:
                chain.delete_rule(rule)
                removed += 1
        table.commit()
    finally:
        table.autocommit = True
    return {"removed": removed}
