"""Everything kvmnet renders from an IPv4 network, as JSON-able data: each model's rule plan,
the nftables documents and python-iptables rules both backends would install, dnsmasq's
config, the forwarding sysctls and the address checks' messages. test_family.py holds it
against tests/golden/ipv4_render.json, so the address-family seam changes no IPv4 byte.

Regenerate (only when an IPv4 change is meant): KVMNET_WRITE_GOLDEN=1 pytest tests/test_family.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvmnet_provider.agent.dhcp import config
from kvmnet_provider.agent.firewall import forwarding, plan
from kvmnet_provider.errors import ConfigError
from kvmnet_provider.models import addresses
from kvmnet_provider.spec import validate

GOLDEN = Path(__file__).parent / "golden" / "ipv4_render.json"

MODEL_SPECS: dict[str, dict[str, object]] = {
    "nat": {
        "mode": "nat",
        "bridge": "br-nat",
        "subnet": "10.0.1.0/24",
        "forwards": [
            {"guest": "10.0.1.11", "port": 8080},
            {"guest": "10.0.1.12", "port": 53, "proto": "udp"},
        ],
    },
    "routed": {"mode": "routed", "bridge": "br-rt", "subnet": "10.9.0.0/16"},
    "isolated": {"mode": "isolated", "bridge": "br-iso", "subnet": "10.7.0.0/24"},
    "bridged": {"mode": "bridged", "bridge": "br-lan"},
}
INPUT_SPEC = {"bridge": "br-nat", "address": "10.0.1.254", "subnet": "10.0.1.0/24"}
MASQUERADE_SPEC = {"owner": "stack/nat", "source": "10.0.1.0/24", "out_interface": "eth0"}
DNAT_SPECS = [
    {"owner": "stack/pf", "protocol": "tcp", "host_port": 2222, "guest_address": "10.0.1.11",
     "guest_port": 22, "in_interface": "eth0"},
    {"owner": "stack/pf2", "protocol": "udp", "host_port": 5353, "guest_address": "10.0.1.12",
     "guest_port": 53, "destination": "192.168.50.10"},
]  # fmt: skip


def wire(rules: list[plan.Rule]) -> list[dict[str, object]]:
    return [r.to_wire() for r in rules]


def plans() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in MODEL_SPECS.items():
        net = plan.NetworkRules.from_spec(spec)
        out[name] = {
            "sections": {s: wire(rules) for s, rules in net.sections().items()},
            "passes": wire(net.passes()),
            "flows": wire(net.flows()),
        }
    inp = plan.InputRules.from_spec(INPUT_SPEC)
    out["input"] = {"rules": wire(inp.rules()), "flows": wire(inp.flows())}
    out["masquerade"] = list(plan.masquerade_want(MASQUERADE_SPEC))
    out["dnat"] = [list(plan.dnat_want(s)) for s in DNAT_SPECS]
    return out


def nft_documents(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The JSON documents the nftables backend sends for each model, on a host with no
    ruleset and on one whose iptables-nft filter FORWARD has policy DROP."""
    from kvmnet_provider.agent.firewall import nft_forward, nft_input, nft_nat, nft_rules

    sent: list[Any] = []
    host: dict[str, nft_rules.Ruleset] = {}

    def run(commands: list[dict[str, Any]], doing: str) -> None:
        if commands:
            sent.append({"doing": doing, "commands": commands})

    def ruleset() -> nft_rules.Ruleset:
        return host["rs"]

    for module in (nft_rules, nft_forward, nft_input, nft_nat):
        monkeypatch.setattr(module, "run", run, raising=False)
        monkeypatch.setattr(module, "ruleset", ruleset, raising=False)

    def drop_host() -> nft_rules.Ruleset:
        rs = nft_rules.Ruleset()
        rs.tables.add(("ip", "filter"))
        for name, hook in (("FORWARD", "forward"), ("INPUT", "input")):
            rs.chains[("ip", "filter", name)] = {
                "family": "ip", "table": "filter", "name": name, "type": "filter",
                "hook": hook, "prio": 0, "policy": "drop",
            }  # fmt: skip
        return rs

    out: dict[str, Any] = {}
    for host_name, make in (("plain", nft_rules.Ruleset), ("drop", drop_host)):
        docs: dict[str, Any] = {}
        for name, spec in MODEL_SPECS.items():
            host["rs"] = make()
            sent.clear()
            nft_forward.forward_ensure("stack/" + name, plan.NetworkRules.from_spec(spec))
            docs["forward." + name] = list(sent)
        host["rs"] = make()
        sent.clear()
        nft_input.input_ensure("stack/in", plan.InputRules.from_spec(INPUT_SPEC))
        docs["input"] = list(sent)
        out[host_name] = docs
    host["rs"] = nft_rules.Ruleset()
    sent.clear()
    nft_nat.masquerade_ensure(MASQUERADE_SPEC)
    for spec in DNAT_SPECS:
        nft_nat.dnat_ensure(spec)
    out["nat"] = list(sent)
    return out


def iptc_rule(rule: Any) -> dict[str, Any]:
    return {
        "class": type(rule).__name__,
        "src": rule.src,
        "dst": rule.dst,
        "in": rule.in_interface,
        "out": rule.out_interface,
        "protocol": rule.protocol,
        "matches": [[m.name, m.parameters] for m in rule.matches],
        "target": [rule.target.name, _parameters(rule.target)] if rule.target else None,
    }


def _parameters(target: Any) -> Any:
    try:
        return target.parameters
    except AttributeError:  # a standard verdict (ACCEPT) has none to save
        return None


def iptables_rules(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The python-iptables rules the iptables backend builds for each model (not committed)."""
    from kvmnet_provider.agent.firewall.iptc_import import import_iptc

    import_iptc()
    from kvmnet_provider.agent.firewall import iptables, iptables_nat

    out: dict[str, Any] = {}
    for name, spec in MODEL_SPECS.items():
        net = plan.NetworkRules.from_spec(spec)
        out[name] = {
            s: [iptc_rule(iptables._build(r, "kvmnet:stack/x")) for r in rules]
            for s, rules in net.sections().items()
        }
    inp = plan.InputRules.from_spec(INPUT_SPEC)
    out["input"] = [iptc_rule(iptables._build(r, "kvmnet:stack/x")) for r in inp.rules()]
    built: list[Any] = []

    def ensure(chain: str, owner: str, want: Any, describe: Any, build: Any, *_: Any) -> Any:
        built.extend([chain, iptc_rule(rule)] for rule in build())
        return {}

    monkeypatch.setattr(iptables_nat, "_ensure", ensure)
    iptables_nat.masquerade_ensure(MASQUERADE_SPEC)
    for spec in DNAT_SPECS:
        iptables_nat.dnat_ensure(spec)
    out["nat"] = built
    return out


def dnsmasq(tmp: Path) -> str:
    spec = {
        "bridge": "br-nat",
        "subnet": "10.0.1.0/24",
        "gateway": "10.0.1.254",
        "domain": "lab.test",
        "dhcp_range": ["10.0.1.128", "10.0.1.253"],
        "hosts": [],
    }
    return config.conf_text(spec, Path("/run/kvmnet/x"), Path("/var/lib/x"), "dnsmasq", "nogroup")


def messages() -> dict[str, str]:
    """What the address checks say to a user, for bad values."""
    out: dict[str, str] = {}
    for value in ("10.0.1.5/24", "fd00::/64", "nonsense", "10.0.1.0"):
        try:
            validate.network(value)
        except validate.InvalidInput as exc:
            out["network " + value] = str(exc)
    for value in ("fd00::1", "10.0.1.011", " 10.0.1.1", "10.0.1.1/32"):
        try:
            validate.ipv4_address(value)
        except validate.InvalidInput as exc:
            out["address " + value] = str(exc)
    bad = [("fd00::/64", None), ("10.0.1.0/24", "10.0.2.1"), ("10.0.1.0/24", "10.0.1.0"),
           ("x", None), ("10.0.1.0/24", "fd00::1")]  # fmt: skip
    for subnet, gateway in bad:
        try:
            addresses.subnet_and_gateway(subnet, gateway, "net: ")
        except ConfigError as exc:
            out[f"subnet {subnet} gateway {gateway}"] = str(exc)
    ok = addresses.subnet_and_gateway("10.0.1.0/24", "10.0.1.254", "net: ")
    out["subnet ok"] = repr(ok)
    return out


def render_all(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    return {
        "plans": plans(),
        "nftables": nft_documents(monkeypatch),
        "iptables": iptables_rules(monkeypatch),
        "dnsmasq": dnsmasq(tmp).splitlines(),
        "forwarding": {k: str(v) for k, v in forwarding.SYSCTLS.items()},
        "messages": messages(),
    }
