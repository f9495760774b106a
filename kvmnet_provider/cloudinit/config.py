"""The `cloud_init` property: its rules, its normal form and the NoCloud files made from it.

Normal form (what `check` returns): {user_data: text, meta_data: object | None,
network_config: text | None}. user_data given as an object is rendered to `#cloud-config`
YAML; as text it must start with a `#cloud-config` line and parse as a YAML mapping.
Messages never quote the content: user-data carries passwords and keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from ..spec.validate import InvalidInput

KEYS = ("user_data", "meta_data", "network_config")
MAX_BYTES = 1024 * 1024  # all three files together; a seed is a few KiB
HEADER = "#cloud-config"


@dataclass(frozen=True)
class CloudInit:
    """A guest's cloud-init NoCloud data. meta_data's instance-id and local-hostname default
    from the guest's name (the instance-id also from a digest of the rest, so a change makes
    a new instance)."""

    user_data: dict[str, Any] | str
    meta_data: dict[str, Any] | None = None
    network_config: dict[str, Any] | str | None = None

    def to_props(self) -> dict[str, Any]:
        return {
            "user_data": self.user_data,
            "meta_data": self.meta_data,
            "network_config": self.network_config,
        }


def _plain(value: Any, where: str) -> Any:
    """JSON-like data with whole floats as ints (Pulumi sends every number as a float)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise InvalidInput(f".{where} has a key that is not a string")
        return {k: _plain(v, where) for k, v in value.items()}
    raise InvalidInput(f".{where} holds a {type(value).__name__}, not JSON-like data")


def _yaml_mapping(text: str, where: str) -> dict[str, Any] | None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # problem and position only: the YAML library's own message quotes the line
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InvalidInput(f".{where} is not valid YAML: {problem}{at}") from None
    if doc is not None and not isinstance(doc, dict):
        raise InvalidInput(f".{where} must be a YAML mapping, not a {type(doc).__name__}")
    return doc


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=True)


def _user_data(value: Any) -> str:
    if isinstance(value, dict):
        return f"{HEADER}\n{_dump(_plain(value, 'user_data'))}"
    if not isinstance(value, str):
        raise InvalidInput(".user_data must be an object or #cloud-config text")
    if value.split("\n", 1)[0].rstrip() != HEADER:
        raise InvalidInput(
            f".user_data text must start with a '{HEADER}' line (or be an object, which is "
            "rendered to one)"
        )
    _yaml_mapping(value, "user_data")
    return value


def _network_config(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        doc: dict[str, Any] | None = _plain(value, "network_config")
        text = _dump(doc or {})
    elif isinstance(value, str):
        doc, text = _yaml_mapping(value, "network_config"), value
    else:
        raise InvalidInput(".network_config must be an object or YAML text")
    if not doc or _plain(doc.get("version"), "network_config") not in (1, 2):
        raise InvalidInput(".network_config must have `version: 1` or `version: 2`")
    return text


def _meta_data(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(".meta_data must be an object (instance-id, local-hostname, ...)")
    meta: dict[str, Any] = _plain(value, "meta_data")
    for key in ("instance-id", "local-hostname"):
        if key in meta and (not isinstance(meta[key], str) or not meta[key].strip()):
            raise InvalidInput(f".meta_data.{key} must be a non-empty string")
    return meta


def normalise_cloud_init(value: Any) -> dict[str, Any]:
    """The normal form of a CloudInit or its object form; InvalidInput names the key."""
    if isinstance(value, CloudInit):
        value = value.to_props()
    if not isinstance(value, dict):
        raise InvalidInput("must be an object with user_data (and meta_data, network_config)")
    unknown = sorted(k for k in value if k not in KEYS)
    if unknown:
        raise InvalidInput(f"has unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    if value.get("user_data") is None:
        raise InvalidInput(".user_data is required")
    out = {
        "user_data": _user_data(value["user_data"]),
        "meta_data": _meta_data(value.get("meta_data")),
        "network_config": _network_config(value.get("network_config")),
    }
    size = len(json.dumps(out).encode())
    if size > MAX_BYTES:
        raise InvalidInput(f"is {size} bytes; at most {MAX_BYTES}")
    return out


def cloud_init_digest(normal: dict[str, Any], guest: str) -> str:
    """sha256 of a normalised cloud_init for this guest: what the state keeps of it."""
    doc = {"guest": guest, **normal}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def seed_files(normal: dict[str, Any], guest: str) -> dict[str, bytes]:
    """The NoCloud files: user-data, meta-data (defaults filled in), network-config."""
    meta = dict(normal.get("meta_data") or {})
    meta.setdefault("instance-id", f"{guest}-{cloud_init_digest(normal, guest)[:12]}")
    meta.setdefault("local-hostname", guest)
    files = {
        "user-data": normal["user_data"].encode(),
        "meta-data": _dump(meta).encode(),
    }
    if normal.get("network_config") is not None:
        files["network-config"] = normal["network_config"].encode()
    return files
