"""Names and addresses of a lab, all derived deterministically from the lab name."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

#: Lab names: short, lower-case, no hyphen (the hyphen separates the lab name from the
#: namespace role, so one lab's prefix can never match another lab's namespaces).
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,11}$")
#: The lab LANs live in 198.18.0.0/15; each lab takes 198.18.X.0/24 with X in 1..250.
LAB_SUPERNET = ipaddress.IPv4Network("198.18.0.0/15")
MAX_HOSTS = 89  # host addresses .11 .. .99; .100 is ext
ECHO_PORT = 7777
SSH_PORT = 22


class LabNameError(ValueError):
    """The lab name is not acceptable."""


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise LabNameError(
            f"invalid lab name {name!r}: 1-12 chars of [a-z0-9_], starting with a letter"
        )
    return name


def subnet_octet(name: str) -> int:
    """Third octet of the lab's /24, a stable hash of the name into 1..250."""
    digest = hashlib.sha256(validate_name(name).encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % 250


@dataclass(frozen=True)
class LabNames:
    """Every name and address a lab uses."""

    name: str
    octet: int

    @classmethod
    def for_name(cls, name: str, octet: int | None = None) -> LabNames:
        validate_name(name)
        return cls(name=name, octet=subnet_octet(name) if octet is None else octet)

    # --- namespaces -------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return f"{self.name}-"

    @property
    def switch_ns(self) -> str:
        return f"{self.name}-sw"

    @property
    def ext_ns(self) -> str:
        return f"{self.name}-ext"

    def host_ns(self, index: int) -> str:
        return f"{self.name}-{host_name(index)}"

    def owns_namespace(self, ns: str) -> bool:
        """True for the names this lab gives its namespaces (sw, ext, h<N>)."""
        return re.fullmatch(re.escape(self.prefix) + r"(sw|ext|h[1-9][0-9]*)", ns) is not None

    # --- interfaces -------------------------------------------------------------------
    @property
    def root_veth(self) -> str:
        """Root-namespace end of the operator's veth (<= 15 chars)."""
        return f"{self.name}-op"

    #: switch-side end of the operator veth and name of the bridge (inside the switch ns)
    switch_op_port = "op"
    bridge = "lan"
    ext_port = "ext"
    guest_if = "eth0"

    @staticmethod
    def host_port(index: int) -> str:
        """Switch-side port of host h<index> (inside the switch ns)."""
        return host_name(index)

    # --- addresses --------------------------------------------------------------------
    @property
    def lan(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"198.18.{self.octet}.0/24")

    def _addr(self, last: int) -> str:
        return f"198.18.{self.octet}.{last}"

    @property
    def operator_address(self) -> str:
        return self._addr(1)

    @property
    def gateway(self) -> str:
        return self._addr(254)

    @property
    def ext_address(self) -> str:
        return self._addr(100)

    def host_address(self, index: int) -> str:
        if not 1 <= index <= MAX_HOSTS:
            raise ValueError(f"host index {index} out of range 1..{MAX_HOSTS}")
        return self._addr(10 + index)

    def cidr(self, address: str) -> str:
        return f"{address}/{self.lan.prefixlen}"


def host_name(index: int) -> str:
    return f"h{index}"


def host_index(host: str) -> int:
    m = re.fullmatch(r"h([1-9][0-9]*)", host)
    if not m:
        raise ValueError(f"not a host name: {host!r}")
    return int(m.group(1))
