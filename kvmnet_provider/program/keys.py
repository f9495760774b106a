"""The stack config keys kvmnet reads, and the checks that a stack names no others.

A typo'd key would otherwise be ignored and its default used without a word, so every
`kvmnet:` key that no part of kvmnet reads fails `preview`, naming it and the known keys.
"""

from __future__ import annotations

from collections.abc import Iterable

import pulumi

from ..connection.credentials import HOST_SECRETS
from ..errors import ConfigError
from .defaults import NS
from .guest_disks import DISK_KEYS

# A network's keys: under `kvmnet:` for the one-host program, in each entry of a fleet host's
# `networks`.
NETWORK_KEYS = (
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
    "autostart",
    "verify",
    "verifyTarget",
    "verifyOnRefresh",
)
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
    "ready",
    "autostart",
)
FORWARD_KEYS = ("guest", "guest_port", "host_port", "protocol")
# A fleet host's keys: its connection (as kvmnet:host), its networks and its own secrets.
HOST_KEYS = ("connection", "networks", *HOST_SECRETS)
# Keys that hold for the whole stack, one host or many.
STACK_WIDE_KEYS = ("accelerator", "firewallBackend", "guestImage", "guestStopTimeout")
# Keys the provider reads itself (connection/credentials.py, the session keeper).
PROVIDER_KEYS = ("keepSessions", "sshCredentials", *HOST_SECRETS)
# Every `kvmnet:` key of a stack of this program.
STACK_KEYS = tuple(sorted({*NETWORK_KEYS, *STACK_WIDE_KEYS, *PROVIDER_KEYS, "host", "hosts"}))

# Keys read as structured values, and what each must be.
STRUCTURED_KEYS = {
    "host": "an object {host, user, ...}",
    "hosts": "an object {NAME: {connection, networks}}",
    "guestImage": "an object {kernel, initrd}",
    "guests": "a list of guests",
    "portForwards": "a list of port forwards",
    "dhcp": "true or false",
    "autostart": "true or false",
    "verify": "true or false",
    "verifyOnRefresh": "true or false",
    "dhcpRange": "a list [start, end]",
    "bridgeAddresses": "a list of addresses",
}


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
