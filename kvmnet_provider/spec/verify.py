"""A network's own check of its model's contract (`verify`): the settings and what each model
promises, shared by the program, the NetworkCheck resource and the host agent. Pure standard
library.

What a probe on the network's bridge must see, per model (docs/DESIGN.md's reachability row):
- the gateway (the bridge's address) answers: routed and NAT; isolated has none;
- the outside target is reached: NAT only; routed (the reply has no way back) and isolated
  (nothing leaves the bridge) must not reach it.
"""

from __future__ import annotations

import ipaddress

from .models import MODELS, WITH_BRIDGE_ADDRESS
from .validate import InvalidInput, port

# On by default where the host routes the subnet, so a probe can see the whole row; isolated
# has only a refusal to show and bridged a LAN kvmnet does not own: off unless asked.
ON_BY_DEFAULT = WITH_BRIDGE_ADDRESS
VERIFIABLE = ("isolated", "routed", "nat")
CHECKS = ("gateway", "outside", "dns", "dhcp")


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
