"""Secret credentials, held only in the provider process's memory.

The dynamic provider's `configure` receives the stack's (decrypted) secret config and
stores it here; nothing here is pickled into the state or printed.
"""

from __future__ import annotations

import io
import json
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

CONFIG_PRIVATE_KEY = "kvmnet:sshPrivateKey"
CONFIG_PASSWORD = "kvmnet:sshPassword"
# {"HOST" or "HOST:PORT": {"privateKey": ..., "password": ...}}: offered to that host only.
CONFIG_PER_HOST = "kvmnet:sshCredentials"

_lock = threading.Lock()
_private_key_text: str | None = None
_password: str | None = None
_per_host: dict[str, dict[str, str]] | str = {}  # or why the config value is unusable
# A fleet's per-host secrets (kvmnet:hosts.<name>.sshPrivateKey / .sshPassword), by the
# host's (address, port); they win over both the map above and the stack-wide ones.
HOST_SECRETS = ("sshPrivateKey", "sshPassword")
_fleet: dict[tuple[str, int], tuple[str | None, str | None]] = {}
# What a session keeper (keeper.py) was handed for its one host: (key, password, source).
_pinned: dict[tuple[str, int], tuple[str | None, str | None, str]] = {}


def configure(private_key: str | None, password: str | None, per_host: object = None) -> None:
    global _private_key_text, _password, _per_host
    parsed = per_host_credentials(per_host)
    with _lock:
        _private_key_text = private_key or None
        _password = password or None
        _per_host = parsed


def configure_hosts(raw_hosts: str | None) -> None:
    """Per-host secrets from the (decrypted) `kvmnet:hosts` config, a JSON object of
    {name: {connection: {host, port}, sshPrivateKey?, sshPassword?}}."""
    found: dict[tuple[str, int], tuple[str | None, str | None]] = {}
    try:
        hosts = json.loads(raw_hosts) if raw_hosts else {}
    except ValueError:
        hosts = {}  # the program says what is wrong with it, naming the property
    for spec in hosts.values() if isinstance(hosts, dict) else ():
        if not isinstance(spec, dict) or not isinstance(spec.get("connection"), dict):
            continue
        key, password = (spec.get(name) or None for name in HOST_SECRETS)
        port = spec["connection"].get("port", 22)
        if (key or password) and isinstance(port, int):
            found[(str(spec["connection"].get("host")), port)] = (key, password)
    with _lock:
        _fleet.clear()
        _fleet.update(found)


def per_host_credentials(raw: object) -> dict[str, dict[str, str]] | str:
    """The per-host map from its config value (a JSON text or an object), or what is wrong
    with it, in words that never repeat the value."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return f"config {CONFIG_PER_HOST} is not JSON"
    if not isinstance(raw, dict) or not all(
        isinstance(k, str)
        and isinstance(v, dict)
        and set(v) <= {"privateKey", "password"}
        and all(isinstance(x, str) for x in v.values())
        for k, v in raw.items()
    ):
        return (
            f"config {CONFIG_PER_HOST} must map host or host:port to "
            '{"privateKey": ..., "password": ...}'
        )
    return {str(k): dict(v) for k, v in raw.items()}


def _for_host(host: str | None, port: int) -> tuple[str | None, str | None, str]:
    """(key text, password, where they came from) for this host.

    A host with an entry of its own (a fleet host's secrets, or kvmnet:sshCredentials) gets
    that entry and nothing else. Once a stack names per-host credentials, the stack-wide ones
    are offered to no host: nothing then says which host they were given for, and a host
    without an entry (a new one, a mistyped address) must not receive another's secret."""
    with _lock:
        per_host, key, password = _per_host, _private_key_text, _password
        fleet = dict(_fleet)
        pinned = _pinned.get((host, port)) if host is not None else None
    if pinned is not None:
        return pinned
    if host is not None and (host, port) in fleet:
        own_key, own_password = fleet[(host, port)]
        source = "kvmnet:hosts (sshPrivateKey)" if own_key else "kvmnet:hosts (sshPassword)"
        return own_key, own_password, source
    if isinstance(per_host, str):
        raise ValueError(per_host)
    if host is not None:
        for name in (f"{host}:{port}", host):
            if name in per_host:
                entry = per_host[name]
                return entry.get("privateKey"), entry.get("password"), f"{CONFIG_PER_HOST}[{name}]"
    if (per_host or fleet) and (key or password):
        return None, None, WITHHELD
    return key, password, CONFIG_PRIVATE_KEY


WITHHELD = (
    f"none of its own: the stack-wide {CONFIG_PRIVATE_KEY} / {CONFIG_PASSWORD} are not offered "
    f"once per-host credentials exist; give this host an entry in {CONFIG_PER_HOST} or "
    "kvmnet:hosts"
)


def for_host(host: str, port: int) -> tuple[str | None, str | None, str]:
    """(key text, password, where they came from) that this host is offered: what a session
    keeper is handed, on a pipe, to connect in this process's stead."""
    return _for_host(host, port)


def pin(host: str, port: int, key: str | None, password: str | None, source: str) -> None:
    """In a session keeper: the credentials its provider process would offer this host."""
    with _lock:
        _pinned[(host, port)] = (key, password, source)


def configured_key(host: str | None = None, port: int = 22) -> paramiko.PKey | None:
    text, _, source = _for_host(host, port)
    if not text:
        return None
    import paramiko  # here: a provider whose sessions a keeper holds never loads it

    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    # Never echo the text: say only where it came from.
    raise ValueError(f"config {source} is not an unencrypted OpenSSH/PEM private key")


def configured_password(host: str | None = None, port: int = 22) -> str | None:
    return _for_host(host, port)[1]


def key_source(host: str, port: int) -> str:
    return _for_host(host, port)[2]
