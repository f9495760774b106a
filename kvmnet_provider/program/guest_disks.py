"""A guest's disk keys in stack config (baseImage, baseFormat, diskSizeGib, keepDisk,
cloudInit {userData, metaData, networkConfig}) as GuestSpec arguments, checked with the
resource's own rules; a failure is a ConfigError naming the key."""

from __future__ import annotations

from typing import Any

from ..cloudinit import CloudInit, normalise_cloud_init
from ..errors import ConfigError
from ..spec import guest as guests
from ..spec.ready import Readiness, readiness
from ..spec.validate import InvalidInput, boolean, int_range

DISK_KEYS = ("baseImage", "baseFormat", "diskSizeGib", "keepDisk", "cloudInit")
CLOUD_INIT_KEYS = {
    "userData": "user_data",
    "metaData": "meta_data",
    "networkConfig": "network_config",
}


def guest_disk_args(guest: dict[str, Any], key: str) -> dict[str, Any]:
    """GuestSpec's base_image, base_format, disk_size_gib, keep_disk and cloud_init."""
    rules = {
        "baseImage": ("base_image", guests.host_path),
        "baseFormat": ("base_format", guests.base_format),
        "diskSizeGib": ("disk_size_gib", lambda v: int_range(v, *guests.DISK_SIZE_GIB)),
        "keepDisk": ("keep_disk", boolean),
    }
    out: dict[str, Any] = {}
    for name, (field, rule) in rules.items():
        if guest.get(name) is None:
            continue
        try:
            out[field] = rule(guest[name])
        except InvalidInput as exc:
            raise ConfigError(f"{key}.{name}", str(exc)) from None
    raw = guest.get("cloudInit")
    if raw is not None:
        out["cloud_init"] = cloud_init(raw, f"{key}.cloudInit")
    return out


def guest_ready(guest: dict[str, Any], key: str) -> Readiness | None:
    """The guest's `ready` {lease, tcp, console, timeout, address}, checked; a failure names
    the key, e.g. kvmnet:guests[0].ready.tcp."""
    raw = guest.get("ready")
    if raw is None:
        return None
    try:
        return readiness(raw)
    except InvalidInput as exc:
        reason = str(exc)
        if reason.startswith("."):  # ".tcp must be ..." -> key ...ready.tcp
            sub, _, reason = reason.partition(" ")
            raise ConfigError(f"{key}.ready{sub}", reason) from None
        raise ConfigError(f"{key}.ready", reason) from None


def cloud_init(raw: Any, key: str) -> CloudInit:
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be an object with userData (and metaData, networkConfig)")
    unknown = sorted(set(raw) - set(CLOUD_INIT_KEYS))
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(CLOUD_INIT_KEYS)})"
        )
    props = {CLOUD_INIT_KEYS[k]: v for k, v in raw.items()}
    try:
        normalise_cloud_init(props)
    except InvalidInput as exc:
        # ".user_data is not valid YAML ..." -> key ...cloudInit.userData, reason "is not ..."
        where, _, reason = str(exc).partition(" ")
        for camel, snake in CLOUD_INIT_KEYS.items():
            if where.startswith(f".{snake}"):
                raise ConfigError(f"{key}.{camel}{where[len(snake) + 1 :]}", reason) from None
        raise ConfigError(key, str(exc)) from None
    return CloudInit(**props)
