"""NAT rules through python-iptables (legacy x_tables), each marked as ours.

A rule carries the comment "kvmnet:<owner>". Removal deletes exactly the rules carrying
that comment in the chain we put them in: other rules, ours or anybody's, stay. (The
tutorial's `iptables -t nat -F` is the bug we do not repeat.)
- MASQUERADE in nat/POSTROUTING, in this order (libvirt's): `-s NET -d 224.0.0.0/24 [-o IF]
  -j RETURN` and the same for 255.255.255.255 (never masqueraded), then `-s NET ! -d NET
  [-o IF] -p tcp -j MASQUERADE --to-ports 1024-65535`, the same for udp, then the same
  without -p and ports for the rest. The RETURNs sit in POSTROUTING itself, so for those
  destinations (link-local, never routed) no later nat POSTROUTING rule applies either.
- DNAT (port forward) in nat/PREROUTING: `-p PROTO [-i IF] -m addrtype --dst-type LOCAL
  --dport P -j DNAT --to-destination GUEST:PORT`, or `-d ADDR` instead of the addrtype match
  when a destination is given: only packets addressed to the host itself, never traffic the
  host forwards to another machine's port P. No nat OUTPUT rule: the host's own connections
  to its port P are not forwarded.
A rule of another shape with the same comment (one without the addrtype match, say) is
unequal to what `ensure` wants, so it is replaced, and `remove` deletes it like any other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import iptc  # type: ignore[import-untyped]

from ...spec import validate
from ...spec.family import IPV4, Family
from ...spec.marks import OWNER_PREFIX
from . import plan, xtables

PROTOCOLS = validate.PROTOCOLS


def _netmask_form(cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    return f"{net.network_address}/{net.netmask}"


def _cidr_form(value: str) -> str:
    return str(ipaddress.ip_network(value.lstrip("!"), strict=False))


def table_class(family: Family) -> Any:
    """python-iptables' table class of `family`: iptc.Table, iptc.Table6."""
    return getattr(iptc, family.iptc_table)


def new_rule(family: Family) -> Any:
    """An empty python-iptables rule of `family`: iptc.Rule(), iptc.Rule6()."""
    return getattr(iptc, family.iptc_rule)()


def comment(rule: Any) -> str | None:
    for match in rule.matches:
        if match.name == "comment":
            return str(match.comment)
    return None


def _nat_chain(name: str, family: Family = IPV4) -> tuple[Any, Any]:
    table = table_class(family)(iptc.Table.NAT)
    table.refresh()  # other processes (other stacks' agents) may have changed it
    return table, iptc.Chain(table, name)


@xtables.holding
def _ours(
    chain_name: str,
    owner: str,
    describe: Callable[[Any], dict[str, Any]],
    family: Family = IPV4,
) -> dict[str, Any]:
    mark = OWNER_PREFIX + validate.owner(owner)
    _, chain = _nat_chain(chain_name, family)
    return _marked(chain, mark, describe)


def _marked(chain: Any, mark: str, describe: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The rules of `chain` (as its table's handle holds it) carrying `mark`, described."""
    rules = [describe(r) for r in chain.rules if comment(r) == mark]
    return {"rules": rules, "count": len(rules)}


@xtables.holding
def _remove(chain_name: str, owner: str, family: Family = IPV4) -> dict[str, Any]:
    mark = OWNER_PREFIX + validate.owner(owner)
    table, chain = _nat_chain(chain_name, family)
    with xtables.transaction(table, f"the removal of the {chain_name} rule"):
        removed, _ = drop_marked(chain, mark)
    return {"removed": removed}


def drop_marked(chain: Any, mark: str) -> tuple[int, int]:
    """Delete the rules of `chain` carrying `mark` (in the open transaction): (removed, left)."""
    removed = left = 0
    for rule in list(chain.rules):
        if comment(rule) == mark:
            chain.delete_rule(rule)
            removed += 1
        else:
            left += 1
    return removed, left


@xtables.holding
def _ensure(
    chain_name: str,
    owner: str,
    want: list[dict[str, Any]],
    describe: Callable[[Any], dict[str, Any]],
    build: Callable[[], list[Any]],
    family: Family = IPV4,
) -> dict[str, Any]:
    """Exactly the rules of ours in `want`, in order: kept if they are, else the owner's
    rules (an older shape among them) are replaced by these in one commit. One reading of the
    table serves the comparison and the change (the xtables lock is held throughout, so it
    cannot go stale), and the reading the commit leaves behind serves the read-back."""
    mark = OWNER_PREFIX + validate.owner(owner)
    table, chain = _nat_chain(chain_name, family)
    current = _marked(chain, mark, describe)
    if current["rules"] == want:
        return current
    with xtables.transaction(table, f"the {chain_name} rules"):
        drop_marked(chain, mark)
        for rule in build():
            rule.create_match("comment").comment = mark
            chain.append_rule(rule)
    return _marked(chain, mark, describe)  # settled: the kernel's table, read again


# --- MASQUERADE ------------------------------------------------------------------------------
def _protocol(rule: Any) -> str | None:
    proto = rule.protocol
    return None if proto in ("all", "ip", "0", None) else str(proto)


def _describe_masquerade(rule: Any) -> dict[str, Any]:
    target = rule.target.name if rule.target else None
    return {
        "source": _cidr_form(rule.src),
        "destination_excluded": rule.dst.startswith("!"),
        "destination": _cidr_form(rule.dst),
        "out_interface": rule.out_interface,
        "protocol": _protocol(rule),
        "to_ports": rule.target.to_ports if target == "MASQUERADE" else None,
        "target": target,
    }


def build_masquerade(want: dict[str, Any], family: Family = IPV4) -> Any:
    """The iptc rule for one of plan.masquerade_want's rules (without its comment)."""
    rule = new_rule(family)
    rule.src = _netmask_form(want["source"])
    rule.dst = ("!" if want["destination_excluded"] else "") + _netmask_form(want["destination"])
    if want["out_interface"]:
        rule.out_interface = want["out_interface"]
    if want["protocol"]:
        rule.protocol = want["protocol"]
    target = rule.create_target(want["target"])
    if want["to_ports"]:
        target.to_ports = want["to_ports"]
    return rule


def masquerade_read(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return _ours("POSTROUTING", owner, _describe_masquerade, family)


def masquerade_ensure(spec: dict[str, Any], family: Family = IPV4) -> dict[str, Any]:
    owner, want = plan.masquerade_want(spec, family)
    build = lambda: [build_masquerade(w, family) for w in want]  # noqa: E731
    return _ensure("POSTROUTING", owner, want, _describe_masquerade, build, family)


def masquerade_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return _remove("POSTROUTING", owner, family)


# --- DNAT (port forwards) ----------------------------------------------------------------------
def _dst_type(rule: Any) -> str | None:
    """plan.DST_LOCAL for exactly `-m addrtype --dst-type LOCAL`; any other addrtype match
    (negated, another type, a source type) reads as "other": not the rule kvmnet makes."""
    for match in rule.matches:
        if match.name == "addrtype":
            return plan.DST_LOCAL if match.parameters == {"dst_type": "LOCAL"} else "other"
    return None


def describe_dnat(rule: Any) -> dict[str, Any]:
    dport = next((m.dport for m in rule.matches if m.name in PROTOCOLS), None)
    dst = (
        None
        if rule.dst in ("0.0.0.0/0.0.0.0", "::/0", None)
        else _cidr_form(rule.dst).split("/")[0]
    )
    return {
        "protocol": rule.protocol,
        "in_interface": rule.in_interface,
        "destination": dst,
        "dst_type": _dst_type(rule),
        "host_port": int(dport) if dport else None,
        "to": rule.target.to_destination,
        "target": rule.target.name,
    }


def build_dnat(want: dict[str, Any], family: Family = IPV4) -> Any:
    """The iptc rule for plan.dnat_want's rule (without its comment)."""
    rule = new_rule(family)
    rule.protocol = want["protocol"]
    if want["in_interface"]:
        rule.in_interface = want["in_interface"]
    if want["destination"]:
        rule.dst = f"{want['destination']}/{family.host_mask}"
    if want["dst_type"] == plan.DST_LOCAL:
        rule.create_match("addrtype").dst_type = "LOCAL"
    rule.create_match(want["protocol"]).dport = str(want["host_port"])
    rule.create_target("DNAT").to_destination = want["to"]
    return rule


def dnat_read(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return _ours("PREROUTING", owner, describe_dnat, family)


def dnat_ensure(spec: dict[str, Any], family: Family = IPV4) -> dict[str, Any]:
    owner, want = plan.dnat_want(spec, family)
    build = lambda: [build_dnat(want, family)]  # noqa: E731
    return _ensure("PREROUTING", owner, [want], describe_dnat, build, family)


def dnat_remove(owner: str, family: Family = IPV4) -> dict[str, Any]:
    return _remove("PREROUTING", owner, family)
