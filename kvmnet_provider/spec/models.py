"""The four network models and what each has, declared once for the program, the model
classes, the resources and the host agent. Pure standard library.

What a model has decides the rest: a bridge address (the subnet's gateway on the host, so
the host routes the subnet and two such networks on one host must not overlap), DHCP (dnsmasq
serves from the bridge's address, so only a model with one can have it; there it is on unless
turned off), NAT (the masquerade and port forwards), a gateway for its guests (the bridge's
address, or for a bridged network the LAN's router), and an uplink bridge (the host's NIC
becomes a port of the bridge).
"""

from __future__ import annotations

from dataclasses import dataclass

from .validate import InvalidInput


@dataclass(frozen=True)
class Model:
    name: str
    bridge_address: bool
    dhcp: bool
    nat: bool
    guest_gateway: bool
    uplink_bridge: bool


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model("isolated", bridge_address=False, dhcp=False, nat=False, guest_gateway=False,
              uplink_bridge=False),
        Model("routed", bridge_address=True, dhcp=True, nat=False, guest_gateway=True,
              uplink_bridge=False),
        Model("nat", bridge_address=True, dhcp=True, nat=True, guest_gateway=True,
              uplink_bridge=False),
        Model("bridged", bridge_address=False, dhcp=False, nat=False, guest_gateway=True,
              uplink_bridge=True),
    )
}  # fmt: skip
MODEL_NAMES = tuple(MODELS)
# The models whose bridge carries the subnet's gateway: the host routes their subnet.
WITH_BRIDGE_ADDRESS = tuple(m.name for m in MODELS.values() if m.bridge_address)
WITH_DHCP = tuple(m.name for m in MODELS.values() if m.dhcp)


def model(value: object) -> Model:
    """The model named `value`; InvalidInput naming the choices for any other value."""
    if not isinstance(value, str) or value not in MODELS:
        raise InvalidInput(
            f"unknown model {value!r}; choose one of {', '.join(sorted(MODEL_NAMES))}"
        )
    return MODELS[value]


def uses_dhcp(name: str, dhcp: object) -> bool:
    """Whether a network of model `name` runs DHCP when its `dhcp` setting is `dhcp`: None
    leaves it to the model. Whether the model allows it is the model classes' check."""
    return MODELS[name].dhcp if dhcp is None else bool(dhcp)
