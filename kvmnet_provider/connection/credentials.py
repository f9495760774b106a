"""Secret credentials, held only in the provider process's memory.

The dynamic provider's `configure` receives the stack's (decrypted) secret config and
stores it here; nothing here is pickled into the state or printed.
"""

from __future__ import annotations

import io
import threading

import paramiko

CONFIG_PRIVATE_KEY = "kvmnet:sshPrivateKey"
CONFIG_PASSWORD = "kvmnet:sshPassword"

_lock = threading.Lock()
_private_key_text: str | None = None
_password: str | None = None


def configure(private_key: str | None, password: str | None) -> None:
    global _private_key_text, _password
    with _lock:
        _private_key_text = private_key or None
        _password = password or None


def configured_key() -> paramiko.PKey | None:
    with _lock:
        text = _private_key_text
    if not text:
        return None
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    # Never echo the text: say only where it came from.
    raise ValueError(f"config {CONFIG_PRIVATE_KEY} is not an unencrypted OpenSSH/PEM private key")


def configured_password() -> str | None:
    with _lock:
        return _password
