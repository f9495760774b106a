"""How to reach one host: validated, normalised, and free of secrets (safe in the state)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..spec.firewall import FIREWALL_BACKENDS
from ..spec.validate import InvalidInput

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
PATH_RE = re.compile(r"^/[A-Za-z0-9_.+@/-]*$")
PYTHON_RE = re.compile(r"^(/[A-Za-z0-9_.+@-]+)*/?[A-Za-z0-9_.+-]+$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOSTKEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]{40,}$"
)


class SettingError(InvalidInput):
    """A bad setting, naming the property it came from."""

    def __init__(self, prop: str, message: str) -> None:
        super().__init__(f"{prop}: {message}")
        self.prop = prop
        self.reason = message


@dataclass(frozen=True)
class HostSettings:
    host: str
    port: int = 22
    user: str = "root"
    known_hosts: str | None = None
    host_key: str | None = None
    insecure_accept_any_host_key: bool = False
    private_key_path: str | None = None
    python: str = "python3"
    sudo: bool = False
    connect_timeout: float = 10.0
    allow_agent: bool | None = None  # offer ssh-agent keys to this host (off unless true)
    # Which firewall kvmnet's rules go to: auto (the one the host's own firewall uses),
    # iptables (legacy x_tables, python-iptables) or nftables (libnftables' JSON API).
    firewall_backend: str = "auto"

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def to_props(self) -> dict[str, Any]:
        props = {k: v for k, v in asdict(self).items() if v is not None}
        if props.get("firewall_backend") == "auto":
            del props["firewall_backend"]  # the default: states written before it stay equal
        return props

    @classmethod
    def from_props(cls, raw: Any, prop: str = "connection") -> HostSettings:
        if not isinstance(raw, dict):
            raise SettingError(prop, "must be an object with at least `host`")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SettingError(
                f"{prop}.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(known))})"
            )
        host = raw.get("host")
        if not isinstance(host, str) or not _is_host(host):
            raise SettingError(f"{prop}.host", f"must be an IP address or DNS name, got {host!r}")
        port = raw.get("port", 22)
        if (
            isinstance(port, bool)
            or not isinstance(port, (int, float))
            or int(port) != port
            or not 1 <= port <= 65535
        ):
            raise SettingError(f"{prop}.port", f"must be a TCP port 1-65535, got {port!r}")
        user = raw.get("user", "root")
        if not isinstance(user, str) or not USER_RE.fullmatch(user):
            raise SettingError(f"{prop}.user", f"must be a POSIX user name, got {user!r}")
        for key in ("known_hosts", "private_key_path"):
            value = raw.get(key)
            if value is not None and (not isinstance(value, str) or not PATH_RE.fullmatch(value)):
                raise SettingError(
                    f"{prop}.{key}",
                    "must be an absolute path of [A-Za-z0-9_.+@/-], got " + _shown(value),
                )
        host_key = raw.get("host_key")
        if host_key is not None and (
            not isinstance(host_key, str) or not HOSTKEY_RE.match(host_key.strip())
        ):
            raise SettingError(
                f"{prop}.host_key",
                "must be '<type> <base64>' as in known_hosts, e.g. 'ssh-ed25519 AAAA...'",
            )
        insecure = raw.get("insecure_accept_any_host_key", False)
        sudo = raw.get("sudo", False)
        allow_agent = raw.get("allow_agent")
        for key, value in (
            ("insecure_accept_any_host_key", insecure),
            ("sudo", sudo),
            ("allow_agent", False if allow_agent is None else allow_agent),
        ):
            if not isinstance(value, bool):
                raise SettingError(f"{prop}.{key}", f"must be true or false, got {value!r}")
        if insecure and (host_key or raw.get("known_hosts")):
            raise SettingError(
                f"{prop}.insecure_accept_any_host_key",
                "cannot be combined with host_key or known_hosts",
            )
        python = raw.get("python", "python3")
        if not isinstance(python, str) or not PYTHON_RE.fullmatch(python):
            raise SettingError(
                f"{prop}.python", f"must be a command name or absolute path, got {python!r}"
            )
        timeout = raw.get("connect_timeout", 10.0)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0.5 <= timeout <= 300
        ):
            raise SettingError(
                f"{prop}.connect_timeout", f"must be 0.5-300 seconds, got {timeout!r}"
            )
        backend = raw.get("firewall_backend", "auto")
        if backend not in FIREWALL_BACKENDS:
            raise SettingError(
                f"{prop}.firewall_backend",
                f"must be one of {', '.join(FIREWALL_BACKENDS)}, got {backend!r}",
            )
        return cls(
            host=host,
            port=int(port),
            user=user,
            known_hosts=raw.get("known_hosts"),
            host_key=host_key.strip() if host_key else None,
            insecure_accept_any_host_key=insecure,
            private_key_path=raw.get("private_key_path"),
            python=python,
            sudo=sudo,
            connect_timeout=float(timeout),
            allow_agent=allow_agent,
            firewall_backend=backend,
        )


def _shown(value: object) -> str:
    """A rejected value as errors may show it: a path-like one in full; anything that could be
    a pasted secret (a key where a path belongs) only by its type and length."""
    if isinstance(value, str) and len(value) <= 255 and "\n" not in value and " " not in value:
        if not re.search(r"[A-Za-z0-9+/]{40,}", value):
            return repr(value)
    return f"a {type(value).__name__} of {len(str(value))} characters (not shown)"


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(HOSTNAME_RE.fullmatch(value))
