"""Stack config -> hosts -> networks: the one-host program is a fleet of one.

`kvmnet:host` and a network's keys at the stack's root make one host with one network;
`kvmnet:hosts` makes each named host with its `networks`. Either way each network's keys go
through the same check (checks.network_settings) and become NetworkArgs the same way
(networks.network_args). What differs is only where the keys are, and so how errors and
resource names name them: `kvmnet:guests[1]` and `net-g2` for the one host's network,
`kvmnet:hosts.h1.networks[0].guests[1]` and `h1-nat-g2` for a fleet's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi

from ..connection import HostSettings
from ..errors import ConfigError
from ..models import NetworkArgs
from . import defaults
from .checks import (
    NetworkSettings,
    check_stack_wide,
    host_connection,
    known_keys,
    name,
    network_settings,
)
from .defaults import NS
from .keys import HOST_KEYS, NETWORK_KEYS
from .networks import network_args

# The one-host program's network keys by how stack config holds them: plain text, or
# structured (YAML in the stack file, JSON through `pulumi config set`).
TEXT_KEYS = ("name", "model", "bridge", "subnet", "gateway", "uplink", "domain", "verifyTarget")
OBJECT_KEYS = (
    "guests",
    "portForwards",
    "bridgeAddresses",
    "dhcp",
    "dhcpRange",
    "autostart",
    "verify",
    "verifyOnRefresh",
)


@dataclass
class Network:
    name: str  # as stack config names it
    resource_name: str  # the network's component: its children's names start with it
    model: str
    args: NetworkArgs


@dataclass
class Host:
    name: str | None  # a fleet's name for the host; None for the one-host program's
    connection: HostSettings
    networks: list[Network] = field(default_factory=list)


def read_hosts(cfg: pulumi.Config) -> list[Host]:
    """The hosts and networks the stack declares, checked."""
    if cfg.get_object("hosts") is None:
        return [one_host(cfg)]
    check_stack_wide(cfg)
    return fleet_hosts(cfg)


def one_host_network(cfg: pulumi.Config) -> dict[str, Any]:
    """The one-host program's network keys, as a fleet network's entry would hold them."""
    raw: dict[str, Any] = {key: cfg.get(key) for key in TEXT_KEYS}
    raw.update({key: cfg.get_object(key) for key in OBJECT_KEYS})
    rollback = cfg.get("rollbackSeconds")
    raw["rollbackSeconds"] = _number(rollback) if rollback is not None else None
    if raw["guests"] in (None, []):
        raw["guests"] = [dict(g) for g in defaults.GUESTS]
    return {key: value for key, value in raw.items() if value is not None}


def _number(text: str) -> object:
    """A number as stack config holds it (text); anything else as written, for the check to
    name."""
    try:
        value: object = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float)) else text


def check_stack_config(cfg: pulumi.Config) -> tuple[NetworkSettings, HostSettings | None]:
    """The one-host program's config, checked without declaring anything: the network's
    settings, and the host's connection when kvmnet:host is set (a network's errors need none,
    so they are found before a missing host is)."""
    check_stack_wide(cfg)
    settings = network_settings(one_host_network(cfg), f"{NS}:")
    raw_host = cfg.get_object("host")
    if raw_host is None:
        return settings, None
    return settings, host_connection(raw_host, f"{NS}:host", cfg.get("firewallBackend"))


def connection_from_config(cfg: pulumi.Config) -> HostSettings:
    """The one host's connection: kvmnet:host (required) and kvmnet:firewallBackend."""
    return host_connection(cfg.require_object("host"), f"{NS}:host", cfg.get("firewallBackend"))


def one_host(cfg: pulumi.Config) -> Host:
    settings, connection = check_stack_config(cfg)
    connection = connection or connection_from_config(cfg)
    net_name = cfg.get("name") or defaults.NETWORK_NAME
    args = network_args(settings, connection, cfg, mac_scope=settings.key("guests"))
    return Host(None, connection, [Network(net_name, net_name, settings.model, args)])


def fleet_hosts(cfg: pulumi.Config) -> list[Host]:
    """Each host of `kvmnet:hosts` with its networks, checked in the order written."""
    hosts = cfg.require_object("hosts")
    if not isinstance(hosts, dict) or not hosts:
        raise ConfigError(
            f"{NS}:hosts", "must be a non-empty object {host name: {connection, networks}}"
        )
    return [fleet_host(host_name, raw, cfg) for host_name, raw in hosts.items()]


def fleet_host(host_name: str, raw: Any, cfg: pulumi.Config) -> Host:
    prop = f"{NS}:hosts.{name(host_name, f'{NS}:hosts')}"
    if not isinstance(raw, dict):
        raise ConfigError(prop, "must be an object with `connection` and `networks`")
    known_keys(raw, prop, HOST_KEYS)
    connection = host_connection(
        raw.get("connection"), f"{prop}.connection", cfg.get("firewallBackend")
    )
    networks = raw.get("networks")
    if not isinstance(networks, list) or not networks:
        raise ConfigError(f"{prop}.networks", "must be a non-empty list of networks")
    host = Host(host_name, connection)
    for index, entry in enumerate(networks):
        at = f"{prop}.networks[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(at, "must be an object with at least `name` and `model`")
        known_keys(entry, at, NETWORK_KEYS)
        net_name = name(entry.get("name"), f"{at}.name")
        settings = network_settings(entry, at)
        # Default MACs differ across networks and hosts: the network by its name, not its
        # position, so removing another network leaves them as they are.
        scope = f"{NS}:hosts.{host_name}.networks.{net_name}.guests"
        args = network_args(settings, connection, cfg, mac_scope=scope)
        host.networks.append(Network(net_name, f"{host_name}-{net_name}", settings.model, args))
    names = [n.name for n in host.networks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{prop}.networks", f"network {twice[0]!r} is declared twice")
    return host
