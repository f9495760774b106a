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
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import Resource

from ..connection import HostSettings
from ..spec import validate
from .base import Field, deleted_first, owner_id
from .netfilter import FirewallRuleProvider


def _mode(value: Any) -> str:
    if value not in validate.NETWORK_MODES:
        modes = ", ".join(validate.NETWORK_MODES)
        raise validate.InvalidInput(f"must be one of {modes}, got {value!r}")
    return str(value)


def _forward(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"guest", "port", "proto"}:
        raise validate.InvalidInput(f"each item must be {{guest, port, proto}}, got {value!r}")
    try:
        guest = str(ipaddress.IPv4Address(value.get("guest")))
    except ValueError:
        raise validate.InvalidInput(
            f"guest must be the guest's IPv4 address, got {value.get('guest')!r}"
        ) from None
    proto = value.get("proto", "tcp")
    if proto not in ("tcp", "udp"):
        raise validate.InvalidInput(f"proto must be tcp or udp, got {proto!r}")
    return {"guest": guest, "port": validate.int_range(value.get("port"), 1, 65535), "proto": proto}


def _forwards(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, (list, tuple)):
        raise validate.InvalidInput(f"must be a list, got {value!r}")
    items = [_forward(v) for v in value]
    return sorted(items, key=lambda f: (f["guest"], f["proto"], f["port"]))


class ForwardRulesProvider(FirewallRuleProvider):
    kind = "ForwardRules"
    ops = ("forward.ensure", "forward.read", "forward.remove")
    id_segment = "forward"
    fields = {
        "mode": Field(_mode, required=True),
        "bridge": Field(validate.ifname, required=True),
        "subnet": Field(validate.network),
        "forwards": Field(_forwards, default=[]),
    }

    def cross_check(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        failures = []
        if props["mode"] in ("routed", "nat") and not props.get("subnet"):
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


@dataclass
class ForwardRulesArgs:
    connection: HostSettings
    mode: str
    bridge: pulumi.Input[str]
    subnet: pulumi.Input[str] | None = None
    # NAT: the declared port forwards admitted inbound: {guest: address, port: guest port, proto}
    forwards: Sequence[dict[str, Any]] = ()


class ForwardRules(Resource, module="kvmnet", name="ForwardRules"):
    jump: pulumi.Output[str]
    problems: pulumi.Output[list[str]]
    backend: pulumi.Output[str]

    def __init__(
        self, resource_name: str, args: ForwardRulesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props: dict[str, Any] = {
            "connection": args.connection.to_props(),
            "owner": owner_id("ForwardRules", resource_name),
            "mode": args.mode,
            "bridge": args.bridge,
            "subnet": args.subnet,
            "forwards": list(args.forwards),
            "jump": None,
            "problems": None,
            "rules": None,
            "backend": None,
        }
        super().__init__(ForwardRulesProvider(), resource_name, props, deleted_first(opts))
