"""The SSH connection to a host: host keys checked, credentials from stack config, an
ssh-agent (when allowed) or a key file; every failure one line naming the host and the cause."""

from __future__ import annotations

import base64
import errno
import os
import shlex
from pathlib import Path
from typing import Any

import paramiko

from . import credentials
from .errors import HostError
from .settings import HostSettings
from .tcp import open_tcp

# What paramiko says, word for word, when the server stops answering mid-handshake: its
# banner did not come in time, or the key exchange did not finish in time (connect() then
# goes on to authenticate on a transport that has no session). A reset says more.
STALLED = ("Error reading SSH protocol banner", "No existing session")
NOTHING_TO_OFFER = "No authentication methods available"  # paramiko: no key, password or agent
WHERE_CREDENTIALS_GO = (
    "set connection.private_key_path to a key file on this machine, or the secret "
    "kvmnet:sshPrivateKey / kvmnet:sshPassword (per host: kvmnet:sshCredentials or "
    "kvmnet:hosts.NAME.sshPrivateKey), or connection.allow_agent: true for an ssh-agent"
)


def known_hosts_file(s: HostSettings) -> Path:
    """The known_hosts file this machine checks `s`'s host key against."""
    return Path(s.known_hosts) if s.known_hosts else Path.home() / ".ssh" / "known_hosts"


def _trust_hint(s: HostSettings) -> str:
    target = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
    known = known_hosts_file(s)
    # The default as a user types it (the shell expands ~); a configured path quoted.
    where, folder = ("~/.ssh/known_hosts", "~/.ssh") if not s.known_hosts else (
        shlex.quote(str(known)), shlex.quote(str(known.parent)))  # fmt: skip
    # `>>` makes the file but not its directory (no ~/.ssh on a fresh machine): say so.
    mkdir = "" if known.parent.is_dir() else f"mkdir -p -m 700 {folder} && "
    return (
        f"verify the host's fingerprint, then add it to {where} "
        f"({mkdir}ssh-keyscan -p {s.port} {s.host} >> {where}) or pin it with "
        f"connection.host_key; entry name {target}"
    )


def key_file_problem(path: str) -> str | None:
    """Why the key file at `path` cannot be used, checked on this machine (where the provider
    runs and paramiko reads it) before connecting; None if it can. Never reads the key."""
    if not os.path.exists(path):
        return "does not exist on this machine"
    if not os.path.isfile(path):
        return "is not a file"
    if not os.access(path, os.R_OK):
        return f"is not readable by this machine's user (uid {os.getuid()})"
    return None


def connect(s: HostSettings) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if s.insecure_accept_any_host_key:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    else:
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        known = known_hosts_file(s)
        if not s.host_key and known.exists():
            client.load_host_keys(str(known))
        if s.host_key:
            key_type, blob = s.host_key.split()[:2]
            entry = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
            client.get_host_keys().add(
                entry,
                key_type,
                paramiko.PKey.from_type_string(key_type, base64.b64decode(blob)),
            )
    kwargs: dict[str, Any] = {
        "hostname": s.host,
        "port": s.port,
        "username": s.user,
        "timeout": s.connect_timeout,
        "banner_timeout": s.connect_timeout,
        "auth_timeout": s.connect_timeout,
        "look_for_keys": False,
        "allow_agent": bool(s.allow_agent),
    }
    try:
        pkey = credentials.configured_key(s.host, s.port)  # this host's, never another's
    except ValueError as exc:
        raise HostError(f"{s.label}: {exc}") from None
    if pkey is not None:
        kwargs["pkey"] = pkey
    elif s.private_key_path:
        problem = key_file_problem(s.private_key_path)
        if problem:
            raise HostError(
                f"{s.label}: connection.private_key_path {s.private_key_path} {problem} (set "
                "connection.private_key_path to your key, or the secret kvmnet:sshPrivateKey)"
            )
        kwargs["key_filename"] = s.private_key_path
    password = credentials.configured_password(s.host, s.port)
    # A host whose key was not checked may be anyone: it gets no password to replay.
    if password and not s.insecure_accept_any_host_key:
        kwargs["password"] = password
    try:
        kwargs["sock"] = open_tcp(s.host, s.port, s.connect_timeout)
        client.connect(**kwargs)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostError(
            f"{s.label}: host key CHANGED (got {exc.key.get_name()} {exc.key.fingerprint}); "
            "refusing to connect. If the host was reinstalled, remove the old entry and "
            + _trust_hint(s)
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        source = credentials.key_source(s.host, s.port)
        if source == credentials.WITHHELD:
            raise HostError(f"{s.label}: authentication refused (credentials: {source})") from None
        source = (
            "config " + source
            if pkey is not None
            else f"key file {s.private_key_path}"
            if s.private_key_path
            else "ssh-agent/password"
        )
        where = (
            "the password or the ssh-agent's keys"
            if source == "ssh-agent/password"
            else f"that the key's public half is in {s.user}'s ~/.ssh/authorized_keys there"
        )
        raise HostError(
            f"{s.label}: authentication refused (credentials from {source}): check "
            f"connection.user ({s.user}) and {where}"
        ) from None
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise HostError(
                f"{s.label}: host key unknown; refusing to connect: {_trust_hint(s)}"
            ) from None
        if str(exc) == NOTHING_TO_OFFER:
            source = credentials.key_source(s.host, s.port)
            why = f" (credentials: {source})" if source == credentials.WITHHELD else ""
            raise HostError(
                f"{s.label}: no SSH credentials to offer{why}: {WHERE_CREDENTIALS_GO}"
            ) from None
        if str(exc) in STALLED:
            raise HostError(
                f"{s.label}: the SSH handshake stalled (no answer within {s.connect_timeout:g} s;"
                " is the host up, and the network to it passing packets?"
                " connection.connect_timeout sets the wait)"
            ) from None
        raise HostError(f"{s.label}: SSH failed: {exc}") from None
    except EOFError:  # paramiko's transport saw the socket close (a reset mid-handshake)
        client.close()
        raise HostError(
            f"{s.label}: the connection closed during the SSH handshake (is an SSH server "
            "listening there, and accepting this client?)"
        ) from None
    except TimeoutError:
        client.close()
        raise HostError(
            f"{s.label}: timed out after {s.connect_timeout:g} s (is the host up and the address "
            "right? connection.connect_timeout sets the wait)"
        ) from None
    except (OSError, paramiko.ssh_exception.NoValidConnectionsError) as exc:
        client.close()
        raise HostError(
            f"{s.label}: unreachable: {exc.strerror or exc} ({_unreachable_hint(exc)})"
        ) from None
    return client


def _unreachable_hint(exc: OSError) -> str:
    """What to check: a refusal means the host answered (sshd, port); no route means the
    address or the network."""
    if getattr(exc, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "is the host up and the address right? nothing routes to it from here"
    return "is sshd running there, on connection.port?"
