"""The forward rules per model, as data (agent/firewall/plan.py), and how foreign DROPs are judged.

Pure: no host. The rules are compared with the expected rendering per model, as libvirt's
own tests compare theirs with expected-output files."""

from __future__ import annotations

import pytest

from kvmnet_provider.agent.firewall.plan import (
    InputRules,
    NetworkRules,
    Rule,
    could_admit,
    could_block,
)
from kvmnet_provider.spec.validate import InvalidInput


def rendered(spec: dict[str, object]) -> dict[str, list[str]]:
    net = NetworkRules.from_spec(spec)
    out = {s: [r.text() for r in rules] for s, rules in net.sections().items()}
    out["pass"] = [r.text() for r in net.passes()]
    return out


def test_nat_rules_admit_replies_and_declared_forwards_only() -> None:
    spec = {
        "mode": "nat",
        "bridge": "br-in",
        "subnet": "10.0.1.0/24",
        "forwards": [{"guest": "10.0.1.11", "port": 8080}],
    }
    assert rendered(spec) == {
        "cross": ["-i br-in -o br-in -j ACCEPT"],
        "input": [
            "-o br-in -d 10.0.1.0/24 --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-o br-in -d 10.0.1.11/32 -p tcp --dport 8080 --ctstate DNAT -j ACCEPT",
            "-o br-in -j REJECT",
        ],
        "output": ["-i br-in -s 10.0.1.0/24 -j ACCEPT", "-i br-in -j REJECT"],
        "pass": [
            "-i br-in -o br-in -j ACCEPT",
            "-i br-in -s 10.0.1.0/24 -j ACCEPT",
            "-o br-in -d 10.0.1.0/24 -j ACCEPT",
        ],
    }


def test_routed_accepts_both_ways_isolated_neither_bridged_only_across() -> None:
    routed = rendered({"mode": "routed", "bridge": "br0", "subnet": "10.9.0.0/16"})
    assert routed["input"] == ["-o br0 -d 10.9.0.0/16 -j ACCEPT", "-o br0 -j REJECT"]
    assert routed["output"] == ["-i br0 -s 10.9.0.0/16 -j ACCEPT", "-i br0 -j REJECT"]
    isolated = rendered({"mode": "isolated", "bridge": "br0", "subnet": "10.9.0.0/16"})
    assert isolated == {
        "cross": ["-i br0 -o br0 -j ACCEPT"],
        "input": ["-o br0 -j REJECT"],
        "output": ["-i br0 -j REJECT"],
        "pass": ["-i br0 -o br0 -j ACCEPT"],
    }
    bridged = rendered({"mode": "bridged", "bridge": "br0"})
    assert bridged == {
        "cross": ["-i br0 -o br0 -j ACCEPT"],
        "input": [],
        "output": [],
        "pass": ["-i br0 -o br0 -j ACCEPT"],
    }


def test_a_hundred_taps_add_no_rule() -> None:
    """Rules are per bridge: the plan has no input that grows with the taps."""
    nat = NetworkRules.from_spec({"mode": "nat", "bridge": "br-in", "subnet": "10.0.1.0/24"})
    assert sum(len(v) for v in nat.sections().values()) + len(nat.passes()) == 8


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"mode": "open", "bridge": "br0"}, "mode must be one of"),
        ({"mode": "nat", "bridge": "br0;rm", "subnet": "10.0.1.0/24"}, "interface name"),
        ({"mode": "nat", "bridge": "br0"}, "CIDR"),
        ({"mode": "routed", "bridge": "br0", "subnet": "10.0.1.5/24"}, "host bits"),
        (
            {
                "mode": "routed",
                "bridge": "b",
                "subnet": "10.0.1.0/24",
                "forwards": [{"guest": "10.0.1.2", "port": 80}],
            },
            "nat mode only",
        ),
        (
            {
                "mode": "nat",
                "bridge": "b",
                "subnet": "10.0.1.0/24",
                "forwards": [{"guest": "10.0.1.2", "port": 0}],
            },
            "between 1 and 65535",
        ),
    ],
)
def test_bad_specs_are_refused(spec: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        NetworkRules.from_spec(spec)


NAT = NetworkRules.from_spec({"mode": "nat", "bridge": "br-in", "subnet": "10.0.1.0/24"})


@pytest.mark.parametrize(
    "rule, blocks",
    [
        (Rule("drop"), True),  # -j DROP
        (Rule("reject", iif="br-in"), True),
        (Rule("drop", oif="br-in", dst="10.0.1.0/24"), True),
        (Rule("drop", dst="10.0.0.0/8"), True),  # covers the subnet
        (Rule("drop", src="1.2.3.4/32"), False),  # the operator's targeted policy
        (Rule("drop", iif="eth1"), False),
        (Rule("drop", proto="tcp", dport=22), False),
        (Rule("accept"), False),
        (None, False),  # matches kvmnet does not read
    ],
)
def test_which_foreign_rules_block_a_nat_network(rule: Rule | None, blocks: bool) -> None:
    assert could_block(rule, NAT.flows()) is blocks


@pytest.mark.parametrize(
    ("rule", "admits"),
    [
        (Rule("accept"), True),
        (Rule("accept", dst="10.0.1.0/24"), True),
        (Rule("accept", dst="10.0.0.0/16"), True),
        (Rule("accept", oif="br-in"), True),
        (Rule("accept", dst="10.0.1.11/32"), False),  # one guest: the operator's opening
        (Rule("accept", iif="eth0"), False),  # what arrives on one interface
        (Rule("accept", dst="10.0.1.0/24", ct="established,related"), False),  # replies
        (Rule("accept", proto="tcp", dport=22), False),
        (Rule("accept", oif="br-other"), False),
        (Rule("drop", dst="10.0.1.0/24"), False),
        (None, False),  # matches kvmnet does not read
    ],
)
def test_which_foreign_accepts_let_the_outside_into_a_nat_network(
    rule: Rule | None, admits: bool
) -> None:
    assert could_admit(rule, NAT.refused_inbound()) is admits


def test_only_nat_refuses_a_neighbour() -> None:
    routed = NetworkRules.from_spec({"mode": "routed", "bridge": "br-in", "subnet": "10.0.1.0/24"})
    assert routed.refused_inbound() == [] and not could_admit(Rule("accept"), [])
    assert NAT.refused_inbound() == [Rule("accept", oif="br-in", dst="10.0.1.0/24")]


def test_nft_expressions_read_back_as_the_rules_they_were_made_from() -> None:
    """What the nftables backend writes (JSON expressions) parses back to the same rule, so
    `read` can compare what it finds with what the model wants."""
    from kvmnet_provider.agent.firewall import nft_rules

    spec = {"mode": "nat", "bridge": "br-in", "subnet": "10.0.1.0/24",
            "forwards": [{"guest": "10.0.1.11", "port": 8080, "proto": "udp"}]}  # fmt: skip
    net = NetworkRules.from_spec(spec)
    rules = [r for section in net.sections().values() for r in section] + net.passes()
    assert [r for r in rules if r.proto == "udp" and r.dport == 8080], rules  # the forward's, too
    for rule in rules:
        assert nft_rules.describe(nft_rules.rule_expr(rule)) == rule


def test_the_rules_before_our_jump_in_docker_user_and_in_the_base_chain() -> None:
    """What a packet meets before kvmnet's jump: the base chain up to its DOCKER-USER jump,
    then DOCKER-USER up to ours; what comes after either is not before it."""
    from kvmnet_provider.agent.firewall import nft_forward
    from kvmnet_provider.agent.firewall.nft_rules import DOCKER_USER, PASS, NftRule, Ruleset
    from kvmnet_provider.spec.marks import JUMP_MARK

    def rule(chain: str, handle: int, target: str = "", mark: str | None = None) -> NftRule:
        expr = [{"jump": {"target": target}}] if target else [{"accept": None}]
        return NftRule("ip", "filter", chain, handle, mark, expr)

    base = [rule("FORWARD", 1), rule("FORWARD", 2, DOCKER_USER), rule("FORWARD", 3)]
    docker = [rule(DOCKER_USER, 4), rule(DOCKER_USER, 5, PASS, JUMP_MARK), rule(DOCKER_USER, 6)]
    rs = Ruleset(rules={("ip", "filter", "FORWARD"): base, ("ip", "filter", DOCKER_USER): docker})
    where = nft_forward.Placement("ip", "filter", "FORWARD", DOCKER_USER)
    assert [r.handle for r in nft_forward._before_our_jump(rs, where)] == [1, 4]
    in_base = [rule("FORWARD", 1), rule("FORWARD", 5, PASS, JUMP_MARK), rule("FORWARD", 3)]
    rs = Ruleset(rules={("ip", "filter", "FORWARD"): in_base})
    where = nft_forward.Placement("ip", "filter", "FORWARD", "FORWARD")
    assert [r.handle for r in nft_forward._before_our_jump(rs, where)] == [1]


def test_firewalld_catch_all_reject_gets_kvmnets_jump_above_it_another_tables_blocks() -> None:
    """firewalld's own table ends its base chains in a reject for what no zone allowed: not a
    rule to delete; kvmnet's jumps go to the top of those chains. The same reject in another
    table is still named."""
    from kvmnet_provider.agent.firewall import nft_forward, nft_input
    from kvmnet_provider.agent.firewall.nft_rules import NftRule, Ruleset

    reject = [{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]
    spec = {"bridge": "br-in", "subnet": "10.0.1.0/24", "mode": "nat"}
    net = NetworkRules.from_spec(spec)

    def host(family: str, table: str) -> Ruleset:
        chains = {
            (family, table, name): {"family": family, "table": table, "name": name,
                                    "type": "filter", "hook": hook, "policy": "accept"}
            for name, hook in (("filter_FORWARD", "forward"), ("filter_INPUT", "input"))
        }  # fmt: skip
        rules = {key: [NftRule(family, table, key[2], 9, None, reject)] for key in chains}
        return Ruleset(chains=chains, rules=rules, tables={(family, table)})

    firewalld = host("inet", "firewalld")
    assert nft_forward.placement(firewalld) == nft_forward.Placement(
        "inet", "firewalld", "filter_FORWARD", "filter_FORWARD"
    )
    assert nft_input.input_placement(firewalld) == ("inet", "firewalld", "filter_INPUT")
    assert nft_forward.blockers(firewalld, net) == []
    assert nft_forward.placement(host("inet", "other")) is None
    named = nft_forward.blockers(host("inet", "other"), net)
    assert len(named) == 1 and "table inet other chain filter_FORWARD" in named[0]
    dhcp = InputRules.from_spec({"bridge": "br-in", "address": "10.0.1.1", "subnet": "10.0.1.0/24"})
    assert nft_input.input_blockers(firewalld, dhcp) == []
    named = nft_input.input_blockers(host("inet", "other"), dhcp)
    assert len(named) == 1 and "table inet other chain filter_INPUT" in named[0]
