"""The stack program's config, checked before anything is declared.

Each failure is a ConfigError naming the config path as typed (`kvmnet:subnet`,
`kvmnet:guests[1].memory_mib`, `kvmnet:hosts.h1.networks[0].model`), which Pulumi prints as
one line: no traceback, no "Program failed with an unhandled exception". One network's keys
are checked by one function (network_settings) whether they sit at the stack's root (one
host) or in a fleet host's `networks`. Rules that need the declared model (guest addresses
against the subnet, unique MACs and taps) are the model's: models/addresses.py.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from ..connection.settings import FIREWALL_BACKENDS, HostSettings, SettingError
from ..errors import ConfigError, config_path
from ..models.addresses import subnet_and_gateway, valid
from ..resources.base import list_of
from ..spec import models, validate, verify
from ..spec.guest import ACCELERATORS, MEMORY_MIB, guest_name
from . import defaults
from .defaults import NS
from .guest_disks import guest_disk_args, guest_ready
from .keys import FORWARD_KEYS, GUEST_KEYS

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
ROLLBACK_SECONDS = (5, 600)  # as UplinkBridge checks it
STOP_TIMEOUT = (1, 300)


@dataclass(frozen=True)
class NetworkSettings:
    """One network's stack config, checked, with the defaults filled in (guests and port
    forwards as written: guests.py makes their specs)."""

    config_key: str  # what its keys are under: `kvmnet:`, `kvmnet:hosts.h1.networks[0]`
    model: str
    bridge: str
    subnet: str
    gateway: str | None
    uplink: str | None
    guests: list[dict[str, Any]]
    port_forwards: list[dict[str, Any]]
    bridge_addresses: list[str]
    rollback_seconds: int
    dhcp: bool | None
    domain: str | None
    dhcp_range: tuple[str, str] | None
    autostart: bool = True  # false: nothing of it comes back by itself after a reboot
    verify: bool | None = None  # None: the model's default (spec/verify.py)
    verify_target: str | None = None
    verify_on_refresh: bool = False  # refresh probes again (and shows a failure as drift)

    def key(self, name: str) -> str:
        """How errors name this network's key `name`."""
        return config_path(self.config_key, name)


def network_settings(raw: Mapping[str, Any], config_key: str) -> NetworkSettings:
    """A network's keys `raw` (NETWORK_KEYS) under `config_key`, checked in the order a reader
    fixes them: the model, the addresses, the links, the guests, their port forwards."""

    def key(name: str) -> str:
        return config_path(config_key, name)

    model = valid(models.model, raw.get("model") or defaults.MODEL, key("model"))
    subnet = raw.get("subnet") or defaults.SUBNET
    gateway = (raw.get("gateway") or defaults.GATEWAY) if model.guest_gateway else None
    subnet_and_gateway(subnet, gateway, key(""))
    check_links(raw, key(""))  # bridge, uplink and bridgeAddresses, as the provider would
    guests = as_list(raw.get("guests"), key("guests"))
    names = check_guests(guests, key("guests"))
    forwards = as_list(raw.get("portForwards"), key("portForwards"))
    check_port_forwards(forwards, key("portForwards"), names, key("guests"))
    dhcp, domain, rng = raw.get("dhcp"), raw.get("domain"), raw.get("dhcpRange")
    if dhcp is not None and not isinstance(dhcp, bool):
        raise ConfigError(key("dhcp"), f"must be true or false, got {dhcp!r}")
    if domain is not None and not isinstance(domain, str):
        raise ConfigError(key("domain"), f"must be a DNS domain, got {domain!r}")
    if rng is not None and (not isinstance(rng, list) or len(rng) != 2):
        raise ConfigError(key("dhcpRange"), f"must be [start, end], got {rng!r}")
    autostart = checked_autostart(raw, key("autostart"))
    check = raw.get("verify")
    if check is not None and not isinstance(check, bool):
        raise ConfigError(key("verify"), f"must be true or false, got {check!r}")
    if check and model.name not in verify.VERIFIABLE:
        raise ConfigError(
            key("verify"), f"a {model.name} network cannot be verified yet; leave verify unset"
        )
    target = raw.get("verifyTarget")
    if target is not None:
        valid(verify.target, target, key("verifyTarget"))
    on_refresh = raw.get("verifyOnRefresh", False)
    if not isinstance(on_refresh, bool):
        raise ConfigError(key("verifyOnRefresh"), f"must be true or false, got {on_refresh!r}")
    if on_refresh and not verify.enabled(model.name, check):
        raise ConfigError(
            key("verifyOnRefresh"),
            f"needs the network verified (verify is off for this {model.name} network)",
        )
    rollback = raw.get("rollbackSeconds", defaults.ROLLBACK_SECONDS)
    return NetworkSettings(
        config_key=config_key,
        model=model.name,
        bridge=raw.get("bridge") or defaults.BRIDGE,
        subnet=subnet,
        gateway=gateway,
        uplink=raw.get("uplink"),
        guests=guests,
        port_forwards=forwards,
        bridge_addresses=raw.get("bridgeAddresses") or [],
        rollback_seconds=whole(rollback, key("rollbackSeconds"), *ROLLBACK_SECONDS),
        dhcp=dhcp,
        domain=domain,
        dhcp_range=(rng[0], rng[1]) if rng else None,
        autostart=autostart,
        verify=check,
        verify_target=target,
        verify_on_refresh=on_refresh,
    )


def checked_autostart(raw: Mapping[str, Any], key: str) -> bool:
    """`autostart` of a network or a guest: true (the default) or false."""
    value = raw.get("autostart", True)
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


def check_stack_wide(cfg: pulumi.Config) -> None:
    """The keys every host shares: kvmnet:accelerator and kvmnet:firewallBackend, named as the
    keys (each resource's check would name a resource)."""
    for name, choices in (("accelerator", ACCELERATORS), ("firewallBackend", FIREWALL_BACKENDS)):
        value = cfg.get(name)
        if value is not None and value not in choices:
            raise ConfigError(f"{NS}:{name}", f"must be one of {', '.join(choices)}, got {value!r}")


def host_connection(raw: object, key: str, stack_backend: str | None) -> HostSettings:
    """A host's connection settings `raw` (at `key`); the stack's firewall backend unless the
    host names its own."""
    try:
        settings = HostSettings.from_props(raw, key)
    except SettingError as exc:
        raise ConfigError(exc.prop, exc.reason) from None
    if stack_backend and not (isinstance(raw, dict) and "firewall_backend" in raw):
        settings = dataclasses.replace(settings, firewall_backend=stack_backend)
    return settings


def check_links(raw: Mapping[str, Any], at: str) -> None:
    """A network's `bridge`, `uplink` and `bridgeAddresses` (stack config keys after `at`:
    `kvmnet:`, `kvmnet:hosts.h1.networks[0].`), by the rules the provider's check applies to
    what they become (spec/validate.py: a Bridge's or UplinkBridge's `name`, its `nic` or a
    MasqueradeRule's `out_interface`, an UplinkBridge's `addresses`): a bad one fails before
    any resource is declared, naming the path as typed, not a resource's property."""
    for key in ("bridge", "uplink"):
        if raw.get(key) is not None:
            valid(validate.ifname, raw[key], f"{at}{key}")
    key = f"{at}bridgeAddresses"
    listed = as_list(raw.get("bridgeAddresses"), key)
    for index, address in enumerate(listed):
        valid(validate.interface_address, address, f"{key}[{index}]")
    valid(list_of(validate.interface_address), listed, key)  # no duplicates


def check_guests(guests: list[Any], key: str) -> list[str]:
    """Each guest of a `guests` list (at config key `key`); their names."""
    names = []
    for index, guest in enumerate(guests):
        where = f"{key}[{index}]"
        known_keys(guest, where, GUEST_KEYS, sort=False)
        name = guest.get("name")
        valid(guest_name, name, f"{where}.name")  # on the kernel command line too
        names.append(name)
        for field, (low, high) in (("memory_mib", MEMORY_MIB), ("stop_timeout", STOP_TIMEOUT)):
            if field in guest:
                whole(guest[field], f"{where}.{field}", low, high)
        for field in ("kernel", "initrd", "cmdline"):
            value = guest.get(field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{where}.{field}", f"must be a non-empty string, got {value!r}")
        checked_autostart(guest, f"{where}.autostart")
        guest_disk_args(guest, where)  # baseImage ... cloudInit, each key named
        guest_ready(guest, where)
        if guest.get("address") is not None:
            valid(validate.ipv4_address, guest["address"], f"{where}.address")
    return names


def check_port_forwards(forwards: list[Any], key: str, names: list[str], guests_key: str) -> None:
    """Each entry of a `portForwards` list (at config key `key`) against the guests' names."""
    for index, forward in enumerate(forwards):
        where = f"{key}[{index}]"
        known_keys(forward, where, FORWARD_KEYS, sort=False)
        if forward.get("guest") not in names:
            raise ConfigError(
                f"{where}.guest", f"{forward.get('guest')!r} is not one of {guests_key} {names}"
            )
        for field in ("guest_port", "host_port"):
            valid(validate.port, forward.get(field), f"{where}.{field}")
        valid(validate.protocol, forward.get("protocol", "tcp"), f"{where}.protocol")


def as_list(value: object, prop: str) -> list[Any]:
    """A config list at `prop`: absent is empty, anything else but a list is refused."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(prop, f"must be a list, got {type(value).__name__}")
    return value


def known_keys(value: object, key: str, known: Iterable[str], sort: bool = True) -> None:
    """`value` (at `key`) is an object of `known` keys only; an unknown one fails naming it
    and the known ones (sorted, or as listed)."""
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be an object, got {value!r}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        listed = sorted(known) if sort else list(known)
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(listed)})")


def name(value: object, key: str) -> str:
    """A fleet's host or network name: it goes into resource names (`HOST-NETWORK-...`)."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ConfigError(key, f"must be 1-32 of a-z, 0-9 and '-' (a name), got {value!r}")
    return value


def whole(value: object, key: str, low: int, high: int) -> int:
    return int(valid(lambda v: validate.int_range(v, low, high), value, key))
