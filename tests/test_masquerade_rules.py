"""The NAT model's masquerade: libvirt's set of rules in both backends, how `read` parses it
back, and how the single MASQUERADE of an older kvmnet (on a host or in a state) converges.

Pure: the nftables expressions are JSON, the iptables rules python-iptables objects that are
never committed; no host, no table of the kernel is touched."""

from __future__ import annotations

from typing import Any

import pytest

from kvmnet_provider.agent.firewall import nft_nat, nft_rules, plan
from kvmnet_provider.resources.netfilter import MasqueradeRuleProvider
from kvmnet_provider.spec import masquerade
from kvmnet_provider.spec.family import IPV6

OWNER = "kvt/dev/MasqueradeRule/m"
MARK = "kvmnet:" + OWNER
SPEC = {"owner": OWNER, "source": "10.0.1.0/24", "out_interface": "eth0"}
SPECS = [SPEC, {**SPEC, "out_interface": None}]


def want(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return plan.masquerade_want(spec)[1]


def older(source: str = "10.0.1.0/24", out_if: str | None = "eth0") -> dict[str, Any]:
    """The one rule an older kvmnet made, as it read it back (no protocol, no ports)."""
    return {"source": source, "destination_excluded": True, "destination": source,
            "out_interface": out_if, "target": "MASQUERADE"}  # fmt: skip


# --- what the rules are -------------------------------------------------------------------------
def test_the_rules_are_libvirts_in_its_order() -> None:
    got = [(r["target"], r["destination_excluded"], r["destination"], r["protocol"],
            r["to_ports"]) for r in want(SPEC)]  # fmt: skip
    assert got == [
        ("RETURN", False, "224.0.0.0/24", None, None),
        ("RETURN", False, "255.255.255.255/32", None, None),
        ("MASQUERADE", True, "10.0.1.0/24", "tcp", "1024-65535"),
        ("MASQUERADE", True, "10.0.1.0/24", "udp", "1024-65535"),
        ("MASQUERADE", True, "10.0.1.0/24", None, None),
    ]
    assert {(r["source"], r["out_interface"]) for r in want(SPEC)} == {("10.0.1.0/24", "eth0")}


def test_ipv6_has_no_ipv4_exemptions() -> None:
    rules = plan.masquerade_want({**SPEC, "source": "fd00:0:0:1::/64"}, IPV6)[1]
    assert [r["target"] for r in rules] == ["MASQUERADE"] * 3


def test_shape_ok_takes_only_the_current_set() -> None:
    assert masquerade.shape_ok(want(SPEC))
    assert not masquerade.shape_ok([older()])
    assert not masquerade.shape_ok([])
    assert not masquerade.shape_ok(want(SPEC)[2:])  # the RETURNs deleted by hand
    assert not masquerade.shape_ok([*want(SPEC), older()])


# --- nftables -----------------------------------------------------------------------------------
def nft_rule(handle: int, comment: str, expr: list[Any]) -> nft_rules.NftRule:
    return nft_rules.NftRule("ip", "kvmnet", "postrouting", handle, comment, expr)


@pytest.mark.parametrize("spec", SPECS)
def test_nft_rules_read_back_as_they_were_made(spec: dict[str, Any]) -> None:
    rules = [nft_rule(i, MARK, nft_nat.masquerade_expr(w)) for i, w in enumerate(want(spec))]
    assert [nft_nat._describe_masquerade(r) for r in rules] == want(spec)


def test_nft_masquerade_of_tcp_takes_the_port_range() -> None:
    assert nft_nat.masquerade_expr(want(SPEC)[2])[0] == {
        "match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}
    }
    assert nft_nat.masquerade_expr(want(SPEC)[2])[-1] == {
        "masquerade": {"port": {"range": [1024, 65535]}}
    }
    assert nft_nat.masquerade_expr(want(SPEC)[0])[-1] == {"return": None}


def test_nft_ensure_replaces_the_older_single_rule_in_one_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_expr = nft_nat.masquerade_expr({**older(), "protocol": None, "to_ports": None})
    other = nft_rule(4, "kvmnet:another/dev/MasqueradeRule/m", old_expr)  # another owner's
    host = nft_rules.Ruleset(
        rules={("ip", "kvmnet", "postrouting"): [other, nft_rule(7, MARK, old_expr)]}
    )
    sent: list[list[dict[str, Any]]] = []
    monkeypatch.setattr(nft_nat, "ruleset", lambda: host)
    monkeypatch.setattr(nft_nat, "run", lambda commands, doing: sent.append(commands))

    nft_nat.masquerade_ensure(SPEC)

    assert len(sent) == 1
    changes = [c for c in sent[0] if "delete" in c or "rule" in c.get("add", {})]
    ref = {"family": "ip", "table": "kvmnet", "chain": "postrouting", "handle": 7}
    assert changes[0] == {"delete": {"rule": ref}}
    added = [c["add"]["rule"] for c in changes[1:]]
    assert [a["expr"] for a in added] == [nft_nat.masquerade_expr(w) for w in want(SPEC)]
    assert {a["comment"] for a in added} == {MARK}


def test_nft_ensure_keeps_the_current_set(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = [nft_rule(i, MARK, nft_nat.masquerade_expr(w)) for i, w in enumerate(want(SPEC))]
    host = nft_rules.Ruleset(rules={("ip", "kvmnet", "postrouting"): rules})
    sent: list[Any] = []
    monkeypatch.setattr(nft_nat, "ruleset", lambda: host)
    monkeypatch.setattr(nft_nat, "run", lambda commands, doing: sent.append(commands))
    assert nft_nat.masquerade_ensure(SPEC)["rules"] == want(SPEC)
    assert sent == []


def test_nft_remove_deletes_every_rule_of_the_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = [nft_rule(i, MARK, nft_nat.masquerade_expr(w)) for i, w in enumerate(want(SPEC))]
    other = nft_rule(99, "kvmnet:another/dev/MasqueradeRule/m", ours[-1].expr)
    host = nft_rules.Ruleset(rules={("ip", "kvmnet", "postrouting"): [*ours, other]})
    sent: list[list[dict[str, Any]]] = []
    monkeypatch.setattr(nft_rules, "ruleset", lambda: host)
    monkeypatch.setattr(nft_rules, "run", lambda commands, doing: sent.append(commands))
    monkeypatch.setattr(nft_rules, "tidy", lambda family: None)
    assert nft_nat.masquerade_remove(OWNER) == {"removed": 5}
    assert [c["delete"]["rule"]["handle"] for c in sent[0]] == [0, 1, 2, 3, 4]


# --- iptables (python-iptables rule objects, never committed) -----------------------------------
@pytest.fixture(scope="module")
def iptables() -> Any:
    from kvmnet_provider.agent.firewall.iptc_import import import_iptc

    import_iptc()
    from kvmnet_provider.agent.firewall import iptables_nat

    return iptables_nat


@pytest.mark.parametrize("spec", SPECS)
def test_iptables_rules_read_back_as_they_were_made(iptables: Any, spec: dict[str, Any]) -> None:
    built = [iptables.build_masquerade(w) for w in want(spec)]
    assert [iptables._describe_masquerade(r) for r in built] == want(spec)
    assert built[2].protocol == "tcp" and built[2].target.to_ports == "1024-65535"


def test_iptables_reads_the_older_single_rule_as_not_the_current_set(iptables: Any) -> None:
    import iptc  # type: ignore[import-untyped]

    rule = iptc.Rule()
    rule.src, rule.dst, rule.out_interface = (
        "10.0.1.0/255.255.255.0",
        "!10.0.1.0/255.255.255.0",
        "eth0",
    )
    rule.create_target("MASQUERADE")
    found = iptables._describe_masquerade(rule)
    assert found == {**older(), "protocol": None, "to_ports": None}
    assert not masquerade.shape_ok([found])


# --- the provider: state and hosts of the older shape converge ----------------------------------
CONN = {"host": "198.18.0.11", "port": 22}


def props(rules: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"connection": CONN, "owner": OWNER, "source": "10.0.1.0/24", "out_interface": "eth0",
            "rules": rules, "backend": "iptables"}  # fmt: skip


def test_state_of_the_older_single_rule_is_an_update_without_refresh() -> None:
    provider = MasqueradeRuleProvider()
    found = provider.diff("id", props([older()]), props(None))
    assert found.changes is True and not found.replaces  # rewritten in place, not replaced
    assert provider.diff("id", props(want(SPEC)), props(None)).changes is False
    # the state as Pulumi keeps it: no key whose value is null
    kept = [{k: v for k, v in r.items() if v is not None} for r in want(SPEC)]
    assert provider.diff("id", props(kept), props(None)).changes is False


def test_read_of_the_older_single_rule_is_drift() -> None:
    provider = MasqueradeRuleProvider()
    good = provider.overlay(props(None), {"rules": want(SPEC), "count": 5})
    assert (good["source"], good["out_interface"]) == ("10.0.1.0/24", "eth0")
    for rules in ([older()], want(SPEC)[1:]):
        assert (
            provider.overlay(props(None), {"rules": rules, "count": len(rules)})["source"] is None
        )
