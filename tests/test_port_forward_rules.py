"""A port forward's DNAT rule: its shape in both backends, how `read` parses it back, and how
a rule or a state of the older shape (no "to the host itself" match) converges.

Pure: the nftables expressions are JSON, the iptables rules python-iptables objects that are
never committed; no host, no table of the kernel is touched."""

from __future__ import annotations

from typing import Any

import pytest

from kvmnet_provider.agent.firewall import nft_nat, nft_rules, plan
from kvmnet_provider.resources.netfilter import PortForwardProvider
from kvmnet_provider.spec.validate import InvalidInput

OWNER = "kvt/dev/PortForward/pf"
SPEC = {"owner": OWNER, "host_port": 8080, "guest_address": "10.0.1.11", "guest_port": 80}
SPECS = [
    SPEC,
    {**SPEC, "protocol": "udp", "in_interface": "eth0"},
    {**SPEC, "destination": "198.18.0.11"},
    {**SPEC, "in_interface": "eth0", "destination": "198.18.0.11"},
]


def want(spec: dict[str, Any]) -> dict[str, Any]:
    return plan.dnat_want(spec)[1]


# --- what the rule is ---------------------------------------------------------------------------
def test_a_port_forward_takes_only_packets_to_the_host_itself() -> None:
    assert want(SPEC) == {
        "protocol": "tcp",
        "in_interface": None,
        "destination": None,
        "dst_type": "local",
        "host_port": 8080,
        "to": "10.0.1.11:80",
        "target": "DNAT",
    }
    # An explicit destination already names one of the host's addresses: it narrows instead.
    narrowed = want({**SPEC, "destination": "198.18.0.11"})
    assert narrowed["destination"] == "198.18.0.11" and narrowed["dst_type"] is None


def test_a_bad_protocol_is_refused() -> None:
    with pytest.raises(InvalidInput, match="protocol must be tcp or udp"):
        plan.dnat_want({**SPEC, "protocol": "icmp"})


# --- nftables -----------------------------------------------------------------------------------
def fib_local(flags: Any = "daddr", op: str = "==", right: str = "local") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"fib": {"result": "type", "flags": flags}},
                      "right": right}}  # fmt: skip


def test_nft_rule_is_fib_daddr_type_local_before_the_port() -> None:
    assert nft_nat.dnat_expr(want({**SPEC, "in_interface": "eth0"})) == [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}},
        {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                   "right": "local"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 8080}},
        {"dnat": {"addr": "10.0.1.11", "port": 80}},
    ]  # fmt: skip
    with_destination = nft_nat.dnat_expr(want({**SPEC, "destination": "198.18.0.11"}))
    assert without_fib(with_destination) == with_destination


@pytest.mark.parametrize("spec", SPECS)
def test_nft_rule_reads_back_as_it_was_made(spec: dict[str, Any]) -> None:
    assert nft_nat.describe_dnat(nft_nat.dnat_expr(want(spec))) == want(spec)


@pytest.mark.parametrize("flags", [["daddr"], "daddr"])
def test_nft_rule_as_nft_lists_it_reads_back_too(flags: Any) -> None:
    """As `nft -j list` (1.0.6) shows it, with a counter; a single flag may be a string."""
    listed = [
        fib_local(flags),
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 8080}},
        {"counter": {"packets": 0, "bytes": 0}},
        {"dnat": {"addr": "10.0.1.11", "port": 80}},
    ]  # fmt: skip
    assert nft_nat.describe_dnat(listed) == want(SPEC)


@pytest.mark.parametrize(
    "match, dst_type",
    [
        (None, None),  # the older shape: no fib match at all
        (fib_local(op="!="), "other"),
        (fib_local(right="unicast"), "other"),
        (fib_local(flags="saddr"), "other"),
        (fib_local(flags=["daddr", "iif"]), "other"),
    ],
)
def test_nft_rules_of_another_shape_are_not_ours(match: Any, dst_type: Any) -> None:
    expr = without_fib(nft_nat.dnat_expr(want(SPEC)))
    if match is not None:
        expr.insert(0, match)
    read = nft_nat.describe_dnat(expr)
    assert read["dst_type"] == dst_type and read != want(SPEC)


def without_fib(expr: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in expr if "fib" not in e.get("match", {}).get("left", {})]


def old_rule(handle: int, comment: str) -> nft_rules.NftRule:
    """A rule of the older shape: `tcp dport 8080 dnat to 10.0.1.11:80`."""
    expr = without_fib(nft_nat.dnat_expr(want(SPEC)))
    return nft_rules.NftRule("ip", "kvmnet", "prerouting", handle, comment, expr)


def test_nft_ensure_replaces_the_previous_versions_rule_in_one_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mark = "kvmnet:" + OWNER
    other = old_rule(4, "kvmnet:another/dev/PortForward/pf")  # another owner's: stays
    host = nft_rules.Ruleset(rules={("ip", "kvmnet", "prerouting"): [other, old_rule(7, mark)]})
    sent: list[list[dict[str, Any]]] = []
    monkeypatch.setattr(nft_nat, "ruleset", lambda: host)
    monkeypatch.setattr(nft_nat, "run", lambda commands, doing: sent.append(commands))

    nft_nat.dnat_ensure(SPEC)

    assert len(sent) == 1
    changes = [c for c in sent[0] if "delete" in c or "rule" in c.get("add", {})]
    ref = {"family": "ip", "table": "kvmnet", "chain": "prerouting", "handle": 7}
    assert changes == [
        {"delete": {"rule": ref}},
        {"add": {"rule": {"family": "ip", "table": "kvmnet", "chain": "prerouting",
                          "comment": mark, "expr": nft_nat.dnat_expr(want(SPEC))}}},
    ]  # fmt: skip


def test_nft_ensure_keeps_a_rule_of_the_current_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    mark = "kvmnet:" + OWNER
    rule = nft_rules.NftRule("ip", "kvmnet", "prerouting", 7, mark,
                               nft_nat.dnat_expr(want(SPEC)))  # fmt: skip
    host = nft_rules.Ruleset(rules={("ip", "kvmnet", "prerouting"): [rule]})
    sent: list[Any] = []
    monkeypatch.setattr(nft_nat, "ruleset", lambda: host)
    monkeypatch.setattr(nft_nat, "run", lambda commands, doing: sent.append(commands))
    assert nft_nat.dnat_ensure(SPEC)["rules"] == [want(SPEC)]
    assert sent == []


# --- iptables (python-iptables rule objects, never committed) -----------------------------------
@pytest.fixture(scope="module")
def iptables() -> Any:
    """The iptables backend's module: python-iptables needs libiptc (`make deps` installs it),
    and a machine without it fails here rather than passing these tests unrun."""
    from kvmnet_provider.agent.firewall.iptc_import import import_iptc

    import_iptc()
    from kvmnet_provider.agent.firewall import iptables_nat

    return iptables_nat


def match_names(rule: Any) -> list[str]:
    return [m.name for m in rule.matches]


def test_iptables_rule_is_addrtype_dst_type_local_before_the_port(iptables: Any) -> None:
    rule = iptables.build_dnat(want({**SPEC, "in_interface": "eth0"}))
    assert match_names(rule) == ["addrtype", "tcp"]
    assert rule.matches[0].parameters == {"dst_type": "LOCAL"}
    assert rule.in_interface == "eth0" and rule.dst == "0.0.0.0/0.0.0.0"
    narrowed = iptables.build_dnat(want({**SPEC, "destination": "198.18.0.11"}))
    assert match_names(narrowed) == ["tcp"]
    assert narrowed.dst == "198.18.0.11/255.255.255.255"


@pytest.mark.parametrize("spec", SPECS)
def test_iptables_rule_reads_back_as_it_was_made(iptables: Any, spec: dict[str, Any]) -> None:
    assert iptables.describe_dnat(iptables.build_dnat(want(spec))) == want(spec)


def test_iptables_rules_of_another_shape_are_not_ours(iptables: Any) -> None:
    import iptc  # type: ignore[import-untyped]

    def rule_with(dst_type: str | None) -> Any:
        rule = iptc.Rule()
        rule.protocol = "tcp"
        if dst_type:
            rule.create_match("addrtype").dst_type = dst_type
        rule.create_match("tcp").dport = "8080"
        rule.create_target("DNAT").to_destination = "10.0.1.11:80"
        return rule

    previous = iptables.describe_dnat(rule_with(None))  # a rule of the older shape
    assert previous == {**want(SPEC), "dst_type": None}
    for other in ("!LOCAL", "UNICAST"):
        assert iptables.describe_dnat(rule_with(other))["dst_type"] == "other"


# --- the provider: state and hosts of the older shape converge ----------------------------------
CONN = {"host": "198.18.0.11", "port": 22}


def props(rules: list[dict[str, Any]] | None, **fields: Any) -> dict[str, Any]:
    base = {"connection": CONN, "owner": OWNER, "protocol": "tcp", "host_port": 8080,
            "guest_address": "10.0.1.11", "guest_port": 80, "in_interface": None,
            "destination": None}  # fmt: skip
    return {**base, **fields, "rules": rules, "backend": "iptables"}


def previous(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule as state of the older shape holds it: no `dst_type` key at all."""
    return {k: v for k, v in rule.items() if k != "dst_type"}


def test_state_of_the_previous_version_is_an_update_without_refresh() -> None:
    provider = PortForwardProvider()
    news = props(None)
    old_state = props([previous(want(SPEC))])
    found = provider.diff("id", old_state, news)
    assert found.changes is True and not found.replaces  # rewritten in place, not replaced
    assert provider.diff("id", props([want(SPEC)]), news).changes is False


def test_a_destination_forward_of_the_previous_version_stays_as_it_is() -> None:
    """With a destination the rule's shape did not change: no update for it."""
    provider = PortForwardProvider()
    spec = {**SPEC, "destination": "198.18.0.11"}
    old_state = props([previous(want(spec))], destination="198.18.0.11")
    assert provider.diff("id", old_state, props(None, destination="198.18.0.11")).changes is False


def test_read_of_a_rule_of_another_shape_is_drift() -> None:
    provider = PortForwardProvider()
    good = provider.overlay(props(None), {"rules": [want(SPEC)], "count": 1})
    assert good["host_port"] == 8080 and good["rules"] == [want(SPEC)]
    for rule in (previous(want(SPEC)), {**want(SPEC), "dst_type": None},
                 {**want(SPEC), "dst_type": "other"}):  # fmt: skip
        assert provider.overlay(props(None), {"rules": [rule], "count": 1})["host_port"] is None
