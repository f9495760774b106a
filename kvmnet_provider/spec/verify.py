"""A network's own check of its model's contract (`verify`): the settings and what each model
promises, shared by the program, the NetworkCheck resource and the host agent. Pure standard
library.

What a probe on the network's bridge must see, per model (docs/DESIGN.md's reachability row):
- the gateway (the bridge's address) answers: routed and NAT; isolated has none;
- the outside target is reached: NAT only; routed (the reply has no way back) and isolated
  (nothing leaves the bridge) must not reach it.
And what a neighbour routing the subnet via the host sees (the inbound table), from a second
probe on a link of the host's own: routed lets it in, NAT refuses it (`inbound`) except at
each declared port forward (`forwards`); isolated has no route in to try.
"""

from __future__ import annotations

import ipaddress

from .models import MODELS, WITH_BRIDGE_ADDRESS
from .validate import PROTOCOLS, InvalidInput, ipv4_address, port

# On by default where the host routes the subnet, so a probe can see the whole row; isolated
# has only a refusal to show and bridged a LAN kvmnet does not own: off unless asked.
ON_BY_DEFAULT = WITH_BRIDGE_ADDRESS
VERIFIABLE = ("isolated", "routed", "nat")
CHECKS = ("gateway", "outside", "dns", "dhcp", "inbound", "forwards")
# How a failure blamed on firewalld's zones begins: the agent writes it, the provider's fix
# line recognises it.
FIREWALLD_BLAME = "firewalld's zones"


def enabled(model: str, setting: object) -> bool:
    """Whether a network of `model` is verified when its `verify` setting is `setting`."""
    return model in ON_BY_DEFAULT if setting is None else bool(setting)


def target(value: object) -> str:
    """An outside target, `ADDRESS` (ICMP echo) or `ADDRESS:PORT` (TCP connect), IPv4."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"must be ADDRESS or ADDRESS:PORT (IPv4), got {value!r}")
    address, _, rest = value.partition(":")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise InvalidInput(f"must be ADDRESS or ADDRESS:PORT (IPv4), got {value!r}") from None
    if rest:
        if not rest.isdigit():
            raise InvalidInput(f"port must be a number, got {value!r}")
        port(int(rest))
    return value


def split_target(value: str) -> tuple[str, int | None]:
    address, _, rest = value.partition(":")
    return address, int(rest) if rest else None


def outside_expected(model: str) -> bool:
    """Whether a guest of `model` reaches the outside (only NAT brings the reply back)."""
    return MODELS[model].nat


def gateway_expected(model: str) -> bool:
    return MODELS[model].bridge_address


def inbound_checked(model: str) -> bool:
    """Whether the way in is tried: only where the host routes the subnet (a bridge address)."""
    return MODELS[model].bridge_address


def inbound_expected(model: str) -> bool:
    """Whether a neighbour with a route to the subnet gets in (routed), not NAT or isolated."""
    return MODELS[model].bridge_address and not MODELS[model].nat


def forwards(value: object) -> list[dict[str, object]]:
    """A NAT network's port forwards as the check tries them: [{protocol, host_port,
    guest_address, guest_port, in_interface?}]."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"must be a list of port forwards, got {value!r}")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidInput(f"each port forward must be a mapping, got {item!r}")
        protocol = item.get("protocol", "tcp")
        if protocol not in PROTOCOLS:
            raise InvalidInput(f"protocol must be tcp or udp, got {protocol!r}")
        in_if = item.get("in_interface")
        out.append(
            {
                "protocol": protocol,
                "host_port": port(item.get("host_port")),
                "guest_address": ipv4_address(item.get("guest_address")),
                "guest_port": port(item.get("guest_port")),
                "in_interface": str(in_if) if in_if else None,
            }
        )
    return out
