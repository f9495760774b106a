"""The stack program's config, checked before anything is declared.

Each failure is a ConfigError naming the config key (`kvmnet:subnet`,
`kvmnet:guests[1].memory_mib`, ...), which Pulumi prints as one line: no traceback, no
"Program failed with an unhandled exception". Rules that need the declared model (guest
addresses against the subnet, unique MACs and taps) are the model's: models/addresses.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pulumi

from .connection.settings import FIREWALL_BACKENDS, HostSettings, SettingError
from .errors import ConfigError
from .guest_disk_config import DISK_KEYS, guest_disk_args
from .models import addresses
from .models.networks import MODELS
from .resources.base import list_of
from .spec import validate
from .spec.guest import ACCELERATORS, MEMORY_MIB, guest_name

NS = "kvmnet"
GUEST_KEYS = (
    "name",
    "address",
    "mac",
    "tap",
    "memory_mib",
    "disks",
    "stop_timeout",
    *DISK_KEYS,
    "kernel",
    "initrd",
    "cmdline",
)
FORWARD_KEYS = ("guest", "guest_port", "host_port", "protocol")
# Every `kvmnet:` key of a stack of this program: the program's (program.py, fleet.py) and
# the provider's own (credentials, kvmnet:keepSessions), so a typo fails instead of being
# ignored.
STACK_KEYS = (
    "accelerator",
    "bridge",
    "bridgeAddresses",
    "dhcp",
    "dhcpRange",
    "domain",
    "firewallBackend",
    "gateway",
    "guestImage",
    "guestStopTimeout",
    "guests",
    "host",
    "hosts",
    "keepSessions",
    "model",
    "name",
    "portForwards",
    "rollbackSeconds",
    "sshCredentials",
    "sshPassword",
    "sshPrivateKey",
    "subnet",
    "uplink",
)


def check_stack_keys(keys: Iterable[str]) -> None:
    """ConfigError on the first `kvmnet:` key (of the stack's config `keys`) that no part of
    kvmnet reads."""
    unknown = sorted(
        k for k in keys if k.startswith(f"{NS}:") and k[len(NS) + 1 :] not in STACK_KEYS
    )
    if unknown:
        raise ConfigError(
            unknown[0], f"unknown stack config key (known {NS}: keys: {', '.join(STACK_KEYS)})"
        )


def stack_config_keys() -> set[str]:
    """The keys of the config the engine gave this program run."""
    return set(pulumi.runtime.config.CONFIG.get()) | set(pulumi.runtime.config.get_config_env())


# Keys read as structured values, and what each must be.
STRUCTURED_KEYS = {
    "host": "an object {host, user, ...}",
    "hosts": "an object {NAME: {connection, networks}}",
    "guestImage": "an object {kernel, initrd}",
    "guests": "a list of guests",
    "portForwards": "a list of port forwards",
    "dhcp": "true or false",
    "dhcpRange": "a list [start, end]",
    "bridgeAddresses": "a list of addresses",
}


def check_structured_keys(cfg: pulumi.Config) -> None:
    """A structured key set to plain text fails naming the key and what it must be (the
    SDK's own message calls every one of them a 'JSON object'). The text is not quoted: it
    may have been set as a secret."""
    for key, what in STRUCTURED_KEYS.items():
        try:
            cfg.get_object(key)
        except pulumi.config.ConfigTypeError:
            raise ConfigError(
                f"{NS}:{key}",
                f"must be {what} (YAML in the stack file, or --path / JSON with pulumi config "
                "set), not plain text",
            ) from None


def check_stack_config(cfg: pulumi.Config, default_guests: list[str]) -> None:
    model = cfg.get("model") or "nat"
    if model not in MODELS:
        raise ConfigError(
            f"{NS}:model", f"unknown model {model!r}; choose one of {', '.join(sorted(MODELS))}"
        )
    addresses.subnet_and_gateway(cfg.get("subnet") or "10.0.1.0/24", cfg.get("gateway"), f"{NS}:")
    raw_host = cfg.get_object("host")
    if raw_host is not None:
        try:
            HostSettings.from_props(raw_host, prop=f"{NS}:host")
        except SettingError as exc:
            raise ConfigError(exc.prop, exc.reason) from None
    backend = cfg.get("firewallBackend")
    if backend is not None and backend not in FIREWALL_BACKENDS:
        raise ConfigError(
            f"{NS}:firewallBackend",
            f"must be one of {', '.join(FIREWALL_BACKENDS)}, got {backend!r}",
        )
    links = {"bridge": cfg.get("bridge"), "uplink": cfg.get("uplink"),
             "bridgeAddresses": cfg.get_object("bridgeAddresses")}  # fmt: skip
    check_links(links, f"{NS}:")
    check_accelerator(cfg)
    names = check_guests(_list(cfg, "guests"), f"{NS}:guests")
    check_port_forwards(
        _list(cfg, "portForwards"), f"{NS}:portForwards", names or default_guests, f"{NS}:guests"
    )


def check_links(raw: Mapping[str, Any], at: str) -> None:
    """A network's `bridge`, `uplink` and `bridgeAddresses` (stack config keys after `at`:
    `kvmnet:`, `kvmnet:hosts.h1.networks[0].`), by the rules the provider's check applies to
    what they become (spec/validate.py: a Bridge's or UplinkBridge's `name`, its `nic` or a
    MasqueradeRule's `out_interface`, an UplinkBridge's `addresses`): a bad one fails before
    any resource is declared, naming the path as typed, not a resource's property."""
    for key in ("bridge", "uplink"):
        if raw.get(key) is not None:
            addresses.valid(validate.ifname, raw[key], f"{at}{key}")
    key = f"{at}bridgeAddresses"
    listed = as_list(raw.get("bridgeAddresses"), key)
    for index, address in enumerate(listed):
        addresses.valid(validate.interface_address, address, f"{key}[{index}]")
    addresses.valid(list_of(validate.interface_address), listed, key)  # no duplicates


def check_accelerator(cfg: pulumi.Config) -> None:
    """kvmnet:accelerator, named as the key (each guest's check would name a resource)."""
    value = cfg.get("accelerator")
    if value is not None and value not in ACCELERATORS:
        raise ConfigError(
            f"{NS}:accelerator", f"must be one of {', '.join(ACCELERATORS)}, got {value!r}"
        )


def check_guests(guests: list[Any], key: str) -> list[str]:
    """Each guest of a `guests` list (at config key `key`); their names."""
    names = []
    for index, guest in enumerate(guests):
        where = f"{key}[{index}]"
        _object(guest, where, GUEST_KEYS)
        name = guest.get("name")
        addresses.valid(guest_name, name, f"{where}.name")  # on the kernel command line too
        names.append(name)
        for field, low, high in (("memory_mib", *MEMORY_MIB), ("stop_timeout", 1, 300)):
            if field in guest:
                _whole(guest[field], f"{where}.{field}", low, high)
        for field in ("kernel", "initrd", "cmdline"):
            value = guest.get(field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{where}.{field}", f"must be a non-empty string, got {value!r}")
        guest_disk_args(guest, where)  # baseImage ... cloudInit, each key named
        address = guest.get("address")
        if address is not None and not isinstance(address, str):
            raise ConfigError(f"{where}.address", f"must be an IPv4 address, got {address!r}")
    return names


def check_port_forwards(forwards: list[Any], key: str, names: list[str], guests_key: str) -> None:
    """Each entry of a `portForwards` list (at config key `key`) against the guests' names."""
    for index, forward in enumerate(forwards):
        where = f"{key}[{index}]"
        _object(forward, where, FORWARD_KEYS)
        if forward.get("guest") not in names:
            raise ConfigError(
                f"{where}.guest", f"{forward.get('guest')!r} is not one of {guests_key} {names}"
            )
        for field in ("guest_port", "host_port"):
            _whole(forward.get(field), f"{where}.{field}", 1, 65535)
        if forward.get("protocol", "tcp") not in ("tcp", "udp"):
            raise ConfigError(
                f"{where}.protocol", f"must be tcp or udp, got {forward['protocol']!r}"
            )


def _list(cfg: pulumi.Config, name: str) -> list[Any]:
    return as_list(cfg.get_object(name), f"{NS}:{name}")


def as_list(value: object, prop: str) -> list[Any]:
    """A config list at `prop`: absent is empty, anything else but a list is refused."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(prop, f"must be a list, got {type(value).__name__}")
    return value


def _object(value: Any, key: str, known: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be an object, got {value!r}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(known)})")


def _whole(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(key, f"must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise ConfigError(key, f"must be between {low} and {high}, got {int(value)}")
    return int(value)
