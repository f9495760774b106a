"""A network's NetworkArgs from its stack config: the one place the program makes them, for the
one-host program's network and for each of a fleet's alike."""

from __future__ import annotations

from typing import Any

import pulumi

from ..connection import HostSettings
from ..models import NetworkArgs, PortForwardSpec
from ..spec.models import uses_dhcp
from . import defaults
from .checks import NetworkSettings
from .guests import guest_specs


def network_args(
    settings: NetworkSettings, connection: HostSettings, cfg: pulumi.Config, mac_scope: str
) -> NetworkArgs:
    """The NetworkArgs of a network whose keys network_settings has checked, on the host
    `connection`; the stack's keys (guestImage, guestStopTimeout, accelerator) from `cfg`.
    `mac_scope` tells the network's default MACs from other networks' (guest_defaults.py)."""
    return NetworkArgs(
        connection=connection,
        bridge=settings.bridge,
        subnet=settings.subnet,
        gateway=settings.gateway,
        uplink=settings.uplink,
        guests=guest_specs(
            settings.guests,
            cfg,
            settings.subnet,
            settings.gateway,
            dhcp=uses_dhcp(settings.model, settings.dhcp),
            prop=settings.key("guests"),
            mac_scope=mac_scope,
        ),
        accelerator=cfg.get("accelerator") or defaults.ACCELERATOR,
        bridge_addresses_override=settings.bridge_addresses,
        rollback_seconds=settings.rollback_seconds,
        port_forwards=port_forward_specs(settings.port_forwards),
        # Errors the models raise name the keys as typed (kvmnet:guests[1].tap).
        config_key=settings.config_key,
        dhcp=settings.dhcp,
        dhcp_range=settings.dhcp_range,
        autostart=settings.autostart,
        verify=settings.verify,
        verify_target=settings.verify_target,
        verify_on_refresh=settings.verify_on_refresh,
        **_domain(settings.domain),
    )


def _domain(domain: str | None) -> dict[str, Any]:
    return {"domain": domain} if domain is not None else {}


def port_forward_specs(raw: list[dict[str, Any]]) -> list[PortForwardSpec]:
    """PortForwardSpecs of a network's checked `portForwards` list."""
    return [
        PortForwardSpec(
            guest=f["guest"],
            guest_port=int(f["guest_port"]),
            host_port=int(f["host_port"]),
            protocol=f.get("protocol", "tcp"),
        )
        for f in raw
    ]
