"""ForwardRules: what a network lets through the host's filter FORWARD hook, kept by kvmnet.

One resource per network (never per tap): guest to guest on its bridge; for NAT the way out
and only replies and the declared port forwards back in; for routed both ways; for isolated
nothing in or out (see agent/firewall/plan.py for the rules; the backends beside it keep
them).
`read` reports a rule or jump that went missing (a firewall reload, a Docker restart) as
drift; `up` puts it back, and fails with one line naming the chain and the rule when a
foreign DROP runs before kvmnet's jump.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import pulumi

from ..connection import HostSettings
from ..spec import models, validate
from .autostart import autostart_field
from .declare import DeclaredResource, declaration, field_table, kvmnet_field
from .netfilter import FirewallRuleProvider


def _mode(value: Any) -> str:
    if value not in models.MODEL_NAMES:
        modes = ", ".join(models.MODEL_NAMES)
        raise validate.InvalidInput(f"must be one of {modes}, got {value!r}")
    return str(value)


def _forward(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"guest", "port", "proto"}:
        raise validate.InvalidInput(f"each item must be {{guest, port, proto}}, got {value!r}")
    try:
        guest = validate.ipv4_address(value.get("guest"))
    except validate.InvalidInput:
        raise validate.InvalidInput(
            f"guest must be the guest's IPv4 address, got {value.get('guest')!r}"
        ) from None
    proto = value.get("proto", "tcp")
    if proto not in validate.PROTOCOLS:
        raise validate.InvalidInput(f"proto must be tcp or udp, got {proto!r}")
    return {"guest": guest, "port": validate.port(value.get("port")), "proto": proto}


def _forwards(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, (list, tuple)):
        raise validate.InvalidInput(f"must be a list, got {value!r}")
    items = [_forward(v) for v in value]
    return sorted(items, key=lambda f: (f["guest"], f["proto"], f["port"]))


@declaration
class ForwardRulesArgs:
    connection: HostSettings
    mode: str = kvmnet_field(_mode)
    bridge: pulumi.Input[str] = kvmnet_field(validate.ifname)
    subnet: pulumi.Input[str] | None = kvmnet_field(validate.network, default=None)
    # NAT: the declared port forwards admitted inbound: {guest: address, port: guest port, proto}
    forwards: Sequence[dict[str, Any]] = kvmnet_field(_forwards, default_factory=list, prop=list)
    autostart: bool | None = autostart_field()


class ForwardRulesProvider(FirewallRuleProvider):
    kind = "ForwardRules"
    ops = ("forward.ensure", "forward.read", "forward.remove")
    id_segment = "forward"
    fields = field_table(ForwardRulesArgs)

    def cross_check(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        failures = []
        if props["mode"] in models.WITH_BRIDGE_ADDRESS and not props.get("subnet"):
            failures.append(("subnet", f"is required for the {props['mode']} mode"))
        if props.get("forwards") and props["mode"] != "nat":
            failures.append(("forwards", "are for the nat mode only"))
        subnet = props.get("subnet")
        for item in props.get("forwards") or []:
            if subnet and ipaddress.IPv4Address(item["guest"]) not in ipaddress.ip_network(subnet):
                failures.append(("forwards", f"guest {item['guest']} is not inside {subnet}"))
        return failures

    def read_args(self, props: dict[str, Any]) -> dict[str, Any]:
        return self.spec(props)  # the agent compares what it finds with what we want

    def overlay(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        out = {"jump": live["jump"], "problems": live["problems"], "rules": live["sections"]}
        if live["problems"]:
            # Drift (a rule or jump gone, or changed): refresh shows it, the next up rewrites.
            out["mode"] = None
        return out


class ForwardRules(DeclaredResource[ForwardRulesArgs], module="kvmnet", name="ForwardRules"):
    provider_type = ForwardRulesProvider

    jump: pulumi.Output[str]
    problems: pulumi.Output[list[str]]
    rules: pulumi.Output[dict[str, list[dict[str, Any]]]]  # by section: cross, input, ...
    backend: pulumi.Output[str]
