"""The stack program for several hosts: `kvmnet:hosts` in, networks on each host out.

`program.build()` hands over here when the stack config has `kvmnet:hosts`:
  hosts             {NAME: {connection: {host, port, user, ...} (as kvmnet:host),
                            networks: [{name, model, bridge, subnet, gateway, uplink, guests,
                                        portForwards, bridgeAddresses, rollbackSeconds,
                                        dhcp, domain, dhcpRange}],
                            sshPrivateKey?, sshPassword? (this host's own secrets)}}
NAME names the host in resource names (`NAME-NETWORK-...`) and outputs. Each network is a model
of its own with its guests (keys as the one-host program's). guestImage, guestStopTimeout and
accelerator (and firewallBackend, unless a host's connection sets firewall_backend) are the
stack's, shared by every host. Names that must be unique per host
(bridges, taps, guests, port forwards, and the subnets of routed and NAT networks, which put
their gateway on the host) are checked as the networks are declared (models/collisions.py), so
a collision fails `preview`; the same names on two hosts are fine. A guest without `mac` gets
one made from the host's, the network's and its own names (guest_defaults.py). Every error is a
ConfigError naming the property (`kvmnet:hosts.h1.networks[0].guests[1].address: ...`), one line.

Each host gets its own agent session; the engine runs the hosts' operations side by side, and a
host that cannot be reached fails its own resources only (use `pulumi up --continue-on-error`
to let the others' work finish in the same run).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pulumi

from .connection import HostSettings
from .connection.credentials import HOST_SECRETS
from .connection.settings import SettingError
from .errors import ConfigError
from .models import NetworkArgs, addresses, network_for_model
from .models.networks import MODELS
from .program import dhcp_settings, guest_outputs, guest_specs, port_forward_specs, uses_dhcp
from .program_checks import (
    _whole,
    as_list,
    check_accelerator,
    check_guests,
    check_links,
    check_port_forwards,
)
from .resources import Bridge

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
NETWORK_KEYS = {
    "name",
    "model",
    "bridge",
    "subnet",
    "gateway",
    "uplink",
    "guests",
    "portForwards",
    "bridgeAddresses",
    "rollbackSeconds",
    "dhcp",
    "domain",
    "dhcpRange",
}
HOST_KEYS = {"connection", "networks", *HOST_SECRETS}


def _name(value: Any, prop: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ConfigError(prop, f"must be 1-32 of a-z, 0-9 and '-' (a name), got {value!r}")
    return value


def network_args(
    raw: Any, prop: str, connection: HostSettings, cfg: pulumi.Config, host_name: str
) -> tuple[str, str, NetworkArgs]:
    """(name, model, NetworkArgs) of one entry of host `host_name`'s `networks`."""
    if not isinstance(raw, dict):
        raise ConfigError(prop, "must be an object with at least `name` and `model`")
    _known_keys(raw, prop, NETWORK_KEYS)
    name = _name(raw.get("name"), f"{prop}.name")
    model = raw.get("model") or "nat"
    if model not in MODELS:
        raise ConfigError(
            f"{prop}.model", f"unknown model {model!r}; choose one of {', '.join(sorted(MODELS))}"
        )
    subnet = raw.get("subnet") or "10.0.1.0/24"
    gateway = None if model == "isolated" else raw.get("gateway") or "10.0.1.254"
    addresses.subnet_and_gateway(subnet, gateway, f"{prop}.")
    check_links(raw, f"{prop}.")  # bridge, uplink and bridgeAddresses, as the provider would
    guests = as_list(raw.get("guests"), f"{prop}.guests")
    names = check_guests(guests, f"{prop}.guests")  # the one-host program's rules, each key named
    forwards = as_list(raw.get("portForwards"), f"{prop}.portForwards")
    check_port_forwards(forwards, f"{prop}.portForwards", names, f"{prop}.guests")
    dhcp = dhcp_settings(raw, f"{prop}.")
    args = NetworkArgs(
        connection=connection,
        bridge=raw.get("bridge") or "br-in",
        subnet=subnet,
        gateway=gateway,
        uplink=raw.get("uplink"),
        guests=guest_specs(
            guests,
            cfg,
            subnet,
            gateway,
            dhcp=uses_dhcp(model, dhcp["dhcp"]),
            prop=f"{prop}.guests",
            # Default MACs differ across networks and hosts: the network by its name, not its
            # position, so removing another network leaves them as they are.
            mac_scope=f"kvmnet:hosts.{host_name}.networks.{name}.guests",
        ),
        accelerator=cfg.get("accelerator") or "auto",
        bridge_addresses_override=raw.get("bridgeAddresses") or (),
        rollback_seconds=_whole(raw.get("rollbackSeconds", 30), f"{prop}.rollbackSeconds", 5, 600),
        port_forwards=port_forward_specs(forwards),
        config_key=prop,
        **dhcp,
    )
    return name, model, args


def _known_keys(raw: dict[str, Any], prop: str, known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{prop}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(known))})"
        )


def host_networks(cfg: pulumi.Config) -> list[tuple[str, list[tuple[str, str, NetworkArgs]]]]:
    """[(host name, [(network name, model, NetworkArgs)])] from `kvmnet:hosts`, validated."""
    hosts = cfg.require_object("hosts")
    if not isinstance(hosts, dict) or not hosts:
        raise ConfigError(
            "kvmnet:hosts", "must be a non-empty object {host name: {connection, networks}}"
        )
    out = []
    for host_name, raw in hosts.items():
        prop = f"kvmnet:hosts.{_name(host_name, 'kvmnet:hosts')}"
        if not isinstance(raw, dict):
            raise ConfigError(prop, "must be an object with `connection` and `networks`")
        _known_keys(raw, prop, HOST_KEYS)
        try:
            connection = HostSettings.from_props(raw.get("connection"), f"{prop}.connection")
        except SettingError as exc:
            raise ConfigError(exc.prop, exc.reason) from None
        backend = cfg.get("firewallBackend")  # the stack's, unless the host names its own
        if backend and "firewall_backend" not in raw["connection"]:
            connection = dataclasses.replace(connection, firewall_backend=backend)
        networks = raw.get("networks")
        if not isinstance(networks, list) or not networks:
            raise ConfigError(f"{prop}.networks", "must be a non-empty list of networks")
        declared = [
            network_args(n, f"{prop}.networks[{i}]", connection, cfg, host_name)
            for i, n in enumerate(networks)
        ]
        names = [name for name, _, _ in declared]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"{prop}.networks", f"network {twice[0]!r} is declared twice")
        out.append((host_name, declared))
    return out


def build_fleet(cfg: pulumi.Config) -> None:
    check_accelerator(cfg)
    exported: dict[str, Any] = {}
    for host_name, networks in host_networks(cfg):
        host_out: dict[str, Any] = {"networks": {}}
        for name, model, args in networks:
            host_out["host"] = args.connection.host
            network = network_for_model(model)(f"{host_name}-{name}", args)
            net_out: dict[str, Any] = {
                "model": model,
                "bridge": network.bridge.name,
                "port_forwards": [vars(f) for f in args.port_forwards],
                "guests": guest_outputs(args.guests, network.guests),
            }
            if isinstance(network.bridge, Bridge):
                net_out["bridge_addresses"] = network.bridge.addresses
            host_out["networks"][name] = net_out
        exported[host_name] = host_out
    pulumi.export("model", "fleet")
    pulumi.export("hosts", exported)
