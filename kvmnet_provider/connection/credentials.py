"""Secret credentials, held only in the provider process's memory.

The dynamic provider's `configure` receives the stack's (decrypted) secret config and
stores it here; nothing here is pickled into the state or printed.
"""

from __future__ import annotations

import io
import json
import threading

import paramiko

CONFIG_PRIVATE_KEY = "kvmnet:sshPrivateKey"
CONFIG_PASSWORD = "kvmnet:sshPassword"
# {"HOST" or "HOST:PORT": {"privateKey": ..., "password": ...}}: offered to that host only.
CONFIG_PER_HOST = "kvmnet:sshCredentials"

_lock = threading.Lock()
_private_key_text: str | None = None
_password: str | None = None
_per_host: dict[str, dict[str, str]] | str = {}  # or why the config value is unusable


def configure(private_key: str | None, password: str | None, per_host: object = None) -> None:
    global _private_key_text, _password, _per_host
    parsed = per_host_credentials(per_host)
    with _lock:
        _private_key_text = private_key or None
        _password = password or None
        _per_host = parsed


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
    """(key text, password, where they came from) for this host: its own entry when the
    per-host map has one (and then nothing else), else the stack-wide ones."""
    with _lock:
        per_host, key, password = _per_host, _private_key_text, _password
    if isinstance(per_host, str):
        raise ValueError(per_host)
    if host is not None:
        for name in (f"{host}:{port}", host):
            if name in per_host:
                entry = per_host[name]
                return entry.get("privateKey"), entry.get("password"), f"{CONFIG_PER_HOST}[{name}]"
    return key, password, CONFIG_PRIVATE_KEY


def configured_key(host: str | None = None, port: int = 22) -> paramiko.PKey | None:
    text, _, source = _for_host(host, port)
    if not text:
        return None
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
