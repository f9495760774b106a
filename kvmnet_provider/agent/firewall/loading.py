"""The firewall backends' interface, and each backend loaded at its first use."""

from __future__ import annotations

import functools
import importlib
from typing import Any, Protocol

from ...spec.family import IPV4, Family
from ..errors import AgentError
from . import plan

INSTALL = {
    "iptables": "pip install python-iptables (or apt-get install python3-iptables)",
    "nftables": "pip install pip-nftables (or apt-get install python3-nftables); "
    "it needs libnftables1",
}


class Backend(Protocol):
    """Every operation works on one address family: a net's own, else `family` (IPv4)."""

    NAME: str

    def masquerade_read(self, owner: str, family: Family = IPV4) -> dict[str, Any]: ...
    def masquerade_ensure(self, spec: dict[str, Any], family: Family = IPV4) -> dict[str, Any]: ...
    def masquerade_remove(self, owner: str, family: Family = IPV4) -> dict[str, Any]: ...
    def dnat_read(self, owner: str, family: Family = IPV4) -> dict[str, Any]: ...
    def dnat_ensure(self, spec: dict[str, Any], family: Family = IPV4) -> dict[str, Any]: ...
    def dnat_remove(self, owner: str, family: Family = IPV4) -> dict[str, Any]: ...
    def forward_read(
        self, owner: str, net: plan.NetworkRules | None = None, family: Family = IPV4
    ) -> Any: ...
    def forward_ensure(self, owner: str, net: plan.NetworkRules) -> Any: ...
    def forward_admitters(self, owner: str, net: plan.NetworkRules) -> dict[str, Any]: ...
    def forward_remove(self, owner: str, family: Family = IPV4) -> dict[str, Any]: ...
    def input_read(
        self, owner: str, net: plan.InputRules | None = None, family: Family = IPV4
    ) -> Any: ...
    def input_ensure(self, owner: str, net: plan.InputRules) -> Any: ...
    def input_remove(self, owner: str, family: Family = IPV4) -> dict[str, Any]: ...


@functools.cache
def load(name: str) -> Backend:
    """The backend module, imported at its first use: a session that makes no rule never
    loads python-iptables or libnftables."""
    try:
        if name == "iptables":
            from .iptc_import import import_iptc

            import_iptc()
        module: Any = importlib.import_module(f".{name}", __package__)
    except Exception as exc:
        raise AgentError(
            "missing",
            f"the {name} firewall backend cannot load ({exc}); install with: "
            f"{INSTALL[name]}, or set firewall_backend to the other backend",
        ) from None
    return module  # type: ignore[no-any-return]
