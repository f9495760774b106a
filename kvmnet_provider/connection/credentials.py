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

_lock = threading.Lock()
_private_key_text: str | None = None
_password: str | None = None
# A fleet's per-host secrets (kvmnet:hosts.<name>.sshPrivateKey / .sshPassword), by the
# host's (address, port); they win over the stack-wide ones for that host.
HOST_SECRETS = ("sshPrivateKey", "sshPassword")
_per_host: dict[tuple[str, int], tuple[str | None, str | None]] = {}


def configure(private_key: str | None, password: str | None) -> None:
    global _private_key_text, _password
    with _lock:
        _private_key_text = private_key or None
        _password = password or None


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
        _per_host.clear()
        _per_host.update(found)


def _host_secrets(host: tuple[str, int] | None) -> tuple[str | None, str | None]:
    return _per_host.get(host, (None, None)) if host else (None, None)


def configured_key(host: tuple[str, int] | None = None) -> paramiko.PKey | None:
    """The private key from secret config: the host's own (a fleet's), else the stack's."""
    with _lock:
        text = _host_secrets(host)[0] or _private_key_text
    if not text:
        return None
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    # Never echo the text: say only where it came from.
    raise ValueError(f"config {CONFIG_PRIVATE_KEY} is not an unencrypted OpenSSH/PEM private key")


def configured_password(host: tuple[str, int] | None = None) -> str | None:
    with _lock:
        return _host_secrets(host)[1] or _password
