"""The address-family seam: IPv4 renders exactly as before it existed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from family_render import GOLDEN, render_all

from kvmnet_provider.agent.dhcp import config
from kvmnet_provider.agent.firewall import forwarding, plan
from kvmnet_provider.errors import ConfigError
from kvmnet_provider.models import addresses
from kvmnet_provider.spec import validate
from kvmnet_provider.spec.family import IPV4, IPV6
from kvmnet_provider.spec.family import of as family_of


def test_ipv4_renders_byte_for_byte_as_the_golden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    got = json.dumps(render_all(monkeypatch, tmp_path), indent=1, sort_keys=True) + "\n"
    if os.environ.get("KVMNET_WRITE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text()


# --- the IPv6 family through the same seam (unit level: what would be rendered) ------------------
NAT6 = {
    "mode": "nat",
    "bridge": "br-nat",
    "subnet": "fd00:0:0:1::/64",
    "forwards": [{"guest": "fd00:0:0:1::11", "port": 8080}],
}


def test_the_two_families_describe_themselves() -> None:
    assert (IPV4.host("10.0.1.11"), IPV6.host("fd00::11")) == ("10.0.1.11/32", "fd00::11/128")
    assert (IPV4.nft, IPV6.nft) == ("ip", "ip6")
    assert (IPV4.iptc_table, IPV6.iptc_table, IPV6.iptc_rule) == ("Table", "Table6", "Rule6")
    assert (IPV4.any_network(), IPV6.any_network()) == ("0.0.0.0/0", "::/0")
    assert IPV4.dhcp_mask("10.0.1.0/24") == "255.255.255.0"
    assert IPV6.dhcp_mask("fd00:0:0:1::/64") == "64"
    assert IPV6.endpoint("fd00::11", 22) == "[fd00::11]:22"
    assert IPV4.endpoint("10.0.1.11", 22) == "10.0.1.11:22"
    assert (family_of("fd00::1"), family_of("10.0.1.0/24")) == (IPV6, IPV4)
    assert IPV4.forward_sysctl.endswith("ipv4/ip_forward")
    assert IPV6.forward_sysctl.endswith("ipv6/conf/all/forwarding")


def test_validators_take_a_family() -> None:
    assert validate.network("fd00:0:0:1::/64", IPV6) == "fd00:0:0:1::/64"
    assert validate.address("fd00::11", IPV6) == "fd00::11"
    with pytest.raises(validate.InvalidInput, match="must be an IPv6 network"):
        validate.network("10.0.1.0/24", IPV6)
    with pytest.raises(validate.InvalidInput, match="IPv6 address such as fd00:0:0:1::11"):
        validate.address("10.0.1.11", IPV6)
    with pytest.raises(validate.InvalidInput, match="must be an IPv4 network"):
        validate.network("fd00:0:0:1::/64")
    net, gateway = addresses.subnet_and_gateway("fd00:0:0:1::/64", "fd00:0:0:1::1", "n: ", IPV6)
    assert (str(net), str(gateway)) == ("fd00:0:0:1::/64", "fd00:0:0:1::1")
    with pytest.raises(ConfigError, match="n: gateway: fd00:0:0:2::1 is not inside"):
        addresses.subnet_and_gateway("fd00:0:0:1::/64", "fd00:0:0:2::1", "n: ", IPV6)
    guest = SimpleNamespace(name="g", tap="tap-g", mac="52:54:00:00:00:01", address="fd00:0:0:1::1")
    with pytest.raises(ConfigError, match="is the gateway"):
        addresses.check_guests("n", "fd00:0:0:1::/64", "fd00:0:0:1::1", [guest], family=IPV6)


def test_the_ipv6_plan_renders_ip6_rules_for_every_model() -> None:
    net = plan.NetworkRules.from_spec(NAT6, IPV6)
    assert [r.text() for r in net.sections()["input"]] == [
        "-o br-nat -d fd00:0:0:1::/64 --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-o br-nat -d fd00:0:0:1::11/128 -p tcp --dport 8080 --ctstate DNAT -j ACCEPT",
        "-o br-nat -j REJECT",
    ]
    for name in ("routed", "isolated", "bridged"):
        spec = {"mode": name, "bridge": "br0", "subnet": "fd00:0:0:9::/64"}
        rules = plan.NetworkRules.from_spec(spec, IPV6)
        v4 = plan.NetworkRules.from_spec({**spec, "subnet": "10.9.0.0/24"})
        shape = [len(rs) for rs in rules.sections().values()]
        assert shape == [len(rs) for rs in v4.sections().values()]
    with pytest.raises(validate.InvalidInput):
        plan.NetworkRules.from_spec({**NAT6, "subnet": "10.0.1.0/24"}, IPV6)
    inp = plan.InputRules.from_spec(
        {"bridge": "br-nat", "address": "fd00:0:0:1::1", "subnet": "fd00:0:0:1::/64"}, IPV6
    )
    assert [r.text() for r in inp.rules()][:2] == [
        "-i br-nat -p udp --dport 547 -j ACCEPT",
        "-i br-nat -s fd00:0:0:1::/64 -d fd00:0:0:1::1/128 -p udp --dport 53 -j ACCEPT",
    ]
    assert inp.flows()[0].text() == "-i br-nat -s fe80::/10 -d ff02::1:2/128 -j ACCEPT"


def test_a_rule_of_the_other_family_never_blocks() -> None:
    net = plan.NetworkRules.from_spec(NAT6, IPV6)
    v4_drop = plan.Rule("drop", dst="10.0.0.0/8")
    assert not plan.could_block(v4_drop, net.flows())
    assert plan.could_block(plan.Rule("drop", dst="fd00::/16"), net.flows())


def test_nftables_writes_the_ipv6_plan_in_table_ip6(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvmnet_provider.agent.firewall import nft_forward, nft_nat, nft_rules

    sent: list[dict[str, Any]] = []
    for module in (nft_rules, nft_forward, nft_nat):
        monkeypatch.setattr(module, "run", lambda c, doing: sent.extend(c), raising=False)
        monkeypatch.setattr(module, "ruleset", nft_rules.Ruleset, raising=False)
    net = plan.NetworkRules.from_spec(NAT6, IPV6)
    nft_forward.forward_ensure("stack/nat6", net)
    families = {c[verb][kind]["family"] for c in sent for verb in c for kind in c[verb]}
    assert families == {"ip6"}
    text = json.dumps(sent)
    assert '"protocol": "ip6"' in text and '"protocol": "ip"' not in text
    assert '"right": "fd00:0:0:1::11"' in text  # one address: no prefix, as for IPv4's /32
    for rule in [r for rules in net.sections().values() for r in rules]:
        expr = nft_rules.rule_expr(rule, IPV6)
        assert nft_rules.describe(expr, IPV6) == rule
        if rule.src or rule.dst:
            assert nft_rules.describe(expr) is None  # IPv4 does not read ip6 addresses
    sent.clear()
    spec = {"owner": "stack/pf6", "protocol": "tcp", "host_port": 2222,
            "guest_address": "fd00:0:0:1::11", "guest_port": 22}  # fmt: skip
    nft_nat.dnat_ensure(spec, IPV6)
    (rule,) = [c["add"]["rule"] for c in sent if "rule" in c.get("add", {})]
    assert rule["family"] == "ip6"
    assert rule["expr"][-1] == {"dnat": {"addr": "fd00:0:0:1::11", "port": 22}}
    _, want = plan.dnat_want(spec, IPV6)
    assert nft_nat.describe_dnat(rule["expr"])["to"] == want["to"] == "[fd00:0:0:1::11]:22"


def test_iptables_builds_the_ipv6_plan_as_ip6tables_rules() -> None:
    from kvmnet_provider.agent.firewall.iptc_import import import_iptc

    import_iptc()
    from kvmnet_provider.agent.firewall import iptables

    net = plan.NetworkRules.from_spec(NAT6, IPV6)
    built = [iptables._build(r, "kvmnet:stack/x", IPV6) for r in net.sections()["input"]]
    assert {type(b).__name__ for b in built} == {"Rule6"}
    assert [iptables.describe(b) for b in built] == net.sections()["input"]
    # No NAT rule here: python-iptables finds no IPv6 MASQUERADE or DNAT target in a process
    # that has loaded the IPv4 one (one libxt_ module serves both), as the golden test has.


def test_dnsmasq_writes_the_ipv6_range_with_a_prefix_length() -> None:
    spec = {"bridge": "br6", "subnet": "fd00:0:0:1::/64", "gateway": "fd00:0:0:1::1",
            "domain": "lab.test", "dhcp_range": ["fd00:0:0:1::100", "fd00:0:0:1::1ff"],
            "hosts": []}  # fmt: skip
    text = config.conf_text(spec, Path("/run/x"), Path("/var/x"), "dnsmasq", "nogroup", IPV6)
    assert "dhcp-range=fd00:0:0:1::100,fd00:0:0:1::1ff,64,3600" in text.splitlines()


def test_forwarding_has_one_sysctl_per_family() -> None:
    assert forwarding.SYSCTLS == {f.name: Path(f.forward_sysctl) for f in (IPV4, IPV6)}
