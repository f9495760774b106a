"""SSH keys of a lab: the client key, authorized_keys, host keys and known_hosts."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .netns import run

SSH_KEYGEN = "ssh-keygen"


def ensure_ed25519_key(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at path (private, mode 0600) unless it exists.

    Returns the public key line ("ssh-ed25519 AAAA... comment").
    """
    pub = path.with_name(path.name + ".pub")
    if not (path.exists() and pub.exists()):
        for p in (path, pub):
            p.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    os.chmod(path, 0o600)
    return pub.read_text().strip()


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomically write text to path with the given mode."""
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_authorized_keys(path: Path, public_keys: Iterable[str]) -> None:
    write_file(path, "".join(k.strip() + "\n" for k in public_keys), 0o600)


def known_hosts_line(address: str, port: int, public_key: str) -> str:
    """One OpenSSH known_hosts line (host key type + base64, comment dropped)."""
    keytype, b64 = public_key.split()[:2]
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {keytype} {b64}\n"


def write_known_hosts(path: Path, entries: Iterable[tuple[str, int, str]]) -> None:
    """entries: (address, port, host public key line)."""
    write_file(path, "".join(known_hosts_line(a, p, k) for a, p, k in entries), 0o644)
