"""Each model's firewall rules as text, the way libvirt keeps its networkxml2firewalldata: what
the nftables backend sends (as `nft` commands) and the rules the iptables backend builds (as
iptables-save lines), for one network of each model on a host with no ruleset.
test_firewall_golden.py holds them against tests/golden/firewall/<model>.<backend>.

Regenerate (only when a rule change is meant):
KVMNET_WRITE_GOLDEN=1 pytest tests/test_firewall_golden.py
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from kvmnet_provider.agent.firewall import plan

GOLDEN_DIR = Path(__file__).parent / "golden" / "firewall"
UPLINK = "eth0"
NAT = {"mode": "nat", "bridge": "br-nat", "subnet": "10.0.1.0/24"}
FORWARD = {"guest": "10.0.1.11", "port": 80}
DNAT = {"protocol": "tcp", "host_port": 8080, "guest_address": "10.0.1.11", "guest_port": 80}
MODELS: dict[str, dict[str, Any]] = {
    "isolated": {"net": {"mode": "isolated", "bridge": "br-iso"}},
    "routed": {"net": {"mode": "routed", "bridge": "br-rt", "subnet": "10.9.0.0/16"},
               "address": "10.9.0.1"},
    "nat": {"net": NAT, "address": "10.0.1.1", "masquerade": True},
    "nat-forward": {"net": {**NAT, "forwards": [FORWARD]}, "address": "10.0.1.1",
                    "masquerade": True, "dnat": DNAT},
}  # fmt: skip
OWNER = "stack/net"


def _specs(model: dict[str, Any]) -> tuple[plan.NetworkRules, plan.InputRules | None]:
    """The network's forward rules, and its DHCP/DNS input rules when the model gives the
    bridge an address (isolated bridges have none: kvmnet serves them no DHCP)."""
    net = plan.NetworkRules.from_spec(model["net"])
    if net.subnet is None:
        return net, None
    inp = plan.InputRules.from_spec(
        {"bridge": net.bridge, "address": model["address"], "subnet": net.subnet}
    )
    return net, inp


def _masquerade_spec() -> dict[str, Any]:
    return {"owner": OWNER, "source": NAT["subnet"], "out_interface": UPLINK}


# --- nftables: the JSON commands, written as `nft` commands ------------------------------------
def _nft_value(value: Any) -> str:
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if isinstance(value, dict) and "set" in value:
        return "{ " + ", ".join(_nft_value(v) for v in value["set"]) + " }"
    if isinstance(value, list):
        return ",".join(_nft_value(v) for v in value)
    return str(value)


def _nft_left(left: dict[str, Any]) -> str:
    if "payload" in left:
        return f"{left['payload']['protocol']} {left['payload']['field']}"
    if "meta" in left:
        key = left["meta"]["key"]
        return key if key in ("iifname", "oifname") else f"meta {key}"
    if "ct" in left:
        return f"ct {left['ct']['key']}"
    if "fib" in left:
        flags = left["fib"]["flags"]
        flags = flags if isinstance(flags, list) else [flags]
        return f"fib {' . '.join(flags)} {left['fib']['result']}"
    return json.dumps(left, sort_keys=True)


def _nft_statement(item: dict[str, Any]) -> str:
    if "match" in item:
        m = item["match"]
        op = "" if m["op"] in ("==", "in") else f"{m['op']} "
        return f"{_nft_left(m['left'])} {op}{_nft_value(m['right'])}"
    ((key, value),) = item.items()
    if key == "masquerade" and isinstance(value, dict) and "port" in value:
        low, high = value["port"]["range"]
        return f"masquerade to :{low}-{high}"
    if key == "dnat":
        return f"dnat to {value['addr']}:{value['port']}"
    if key in ("jump", "goto"):
        return f"{key} {value['target']}"
    if value is None:
        return key
    return json.dumps(item, sort_keys=True)


def _nft_object(kind: str, body: dict[str, Any]) -> str:
    if kind == "table":
        return f"table {body['family']} {body['name']}"
    if kind == "chain":
        head = f"chain {body['family']} {body['table']} {body['name']}"
        if "hook" not in body:
            return head
        policy = f" policy {body['policy']};" if body.get("policy") else ""
        spec = f"type {body['type']} hook {body['hook']} priority {body['prio']};{policy}"
        return f"{head} {{ {spec} }}"
    if kind == "rule":
        where = f"rule {body['family']} {body['table']} {body['chain']}"
        if "handle" in body:
            where += f" handle {body['handle']}"
        expr = " ".join(_nft_statement(e) for e in body.get("expr", []))
        comment = f' comment "{body["comment"]}"' if body.get("comment") else ""
        return f"{where} {expr}{comment}".rstrip()
    return f"{kind} {json.dumps(body, sort_keys=True)}"


def nft_lines(sent: list[dict[str, Any]]) -> list[str]:
    lines = []
    for batch in sent:
        lines.append(f"# {batch['doing']}")
        for command in batch["commands"]:
            ((verb, what),) = command.items()
            ((kind, body),) = what.items()
            lines.append(f"{verb} {_nft_object(kind, body)}")
    return lines


def nft_text(monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    from kvmnet_provider.agent.firewall import nft_forward, nft_input, nft_nat, nft_rules

    sent: list[dict[str, Any]] = []
    host = {"rs": nft_rules.Ruleset()}

    def run(commands: list[dict[str, Any]], doing: str) -> None:
        if commands:
            sent.append({"doing": doing, "commands": commands})

    for module in (nft_rules, nft_forward, nft_input, nft_nat):
        monkeypatch.setattr(module, "run", run, raising=False)
        monkeypatch.setattr(module, "ruleset", lambda: host["rs"], raising=False)
    model = MODELS[name]
    net, inp = _specs(model)
    nft_forward.forward_ensure(OWNER, net)
    if inp is not None:
        nft_input.input_ensure(OWNER, inp)
    if model.get("masquerade"):
        nft_nat.masquerade_ensure(_masquerade_spec())
    if model.get("dnat"):
        nft_nat.dnat_ensure({"owner": OWNER + "-pf", **model["dnat"]})
    return "\n".join(nft_lines(sent)) + "\n"


# --- iptables: the python-iptables rules, written as iptables-save lines -----------------------
def _address(flag: str, value: str | None) -> list[str]:
    if not value:
        return []
    negated, value = value.startswith("!"), value.lstrip("!")
    net = ipaddress.ip_network(value, strict=False)
    if net.prefixlen == 0:
        return []
    return (["!"] if negated else []) + [flag, str(net)]


def _interface(flag: str, value: str | None) -> list[str]:
    if not value:
        return []
    negated = value.startswith("!")
    return (["!"] if negated else []) + [flag, value.lstrip("!")]


def _options(parameters: dict[str, Any] | None) -> list[str]:
    out: list[str] = []
    for key, value in (parameters or {}).items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def iptables_line(chain: str, rule: Any) -> str:
    parts = ["-A", chain]
    parts += _address("-s", rule.src) + _address("-d", rule.dst)
    parts += _interface("-i", rule.in_interface) + _interface("-o", rule.out_interface)
    if rule.protocol not in (None, "", "ip", "all", "0"):
        parts += ["-p", rule.protocol]
    for match in rule.matches:
        parts += ["-m", match.name, *_options(match.parameters)]
    target = rule.target
    try:
        params = target.parameters
    except AttributeError:  # a standard verdict (ACCEPT, RETURN) has none
        params = None
    parts += ["-j", target.name, *_options(params)]
    return " ".join(parts)


def iptables_text(monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    """Without the jumps from FORWARD/DOCKER-USER and INPUT (the host's chains decide where)."""
    from kvmnet_provider.agent.firewall.iptc_import import import_iptc

    import_iptc()
    from kvmnet_provider.agent.firewall import iptables, iptables_nat

    model = MODELS[name]
    net, inp = _specs(model)
    mark = "kvmnet:" + OWNER
    lines = ["*filter"]
    for section, rules in net.sections().items():
        lines += [iptables_line(iptables.CHAINS[section], iptables._build(r, mark)) for r in rules]
    for rule in inp.rules() if inp is not None else []:
        lines.append(iptables_line(iptables.INPUT_CHAIN, iptables._build(rule, mark)))
    nat: list[str] = []

    def ensure(chain: str, owner: str, want: Any, describe: Any, build: Any, *_: Any) -> Any:
        for rule in build():
            rule.create_match("comment").comment = "kvmnet:" + owner
            nat.append(iptables_line(chain, rule))
        return {}

    monkeypatch.setattr(iptables_nat, "_ensure", ensure)
    if model.get("masquerade"):
        iptables_nat.masquerade_ensure(_masquerade_spec())
    if model.get("dnat"):
        iptables_nat.dnat_ensure({"owner": OWNER + "-pf", **model["dnat"]})
    if nat:
        lines += ["*nat", *nat]
    return "\n".join(lines) + "\n"
