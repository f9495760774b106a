"""The NAT model's masquerade rules, as the agent makes them and reads them back; the
MasqueradeRule resource holds what it reads against this shape (drift otherwise).

As libvirt's network driver: a RETURN for each of the family's exempt destinations (never
masqueraded), then the masquerade of tcp and of udp to source ports 1024-65535 (a guest's
connection never leaves from a privileged port of the host), then of everything else.
"""

from __future__ import annotations

from typing import Any

from .family import IPV4, Family
from .family import of as family_of

PORTS = "1024-65535"


def rules(source: str, out_interface: str | None, family: Family = IPV4) -> list[dict[str, Any]]:
    """The rules, in order, each as both backends read it back."""

    def rule(target: str, dst: str, excluded: bool, proto: str | None = None) -> dict[str, Any]:
        return {
            "source": source,
            "destination_excluded": excluded,
            "destination": dst,
            "out_interface": out_interface,
            "protocol": proto,
            "to_ports": PORTS if proto else None,
            "target": target,
        }

    want = [rule("RETURN", exempt, False) for exempt in family.nat_exempt]
    want += [rule("MASQUERADE", source, True, proto) for proto in ("tcp", "udp")]
    want.append(rule("MASQUERADE", source, True))
    return want


def shape_ok(found: list[dict[str, Any]]) -> bool:
    """Whether rules read back are exactly the ones kvmnet makes for their source and
    interface (an older single MASQUERADE, or a hand-edited set, is not)."""
    if not found or not found[-1].get("destination_excluded"):
        return False
    source = str(found[-1].get("source"))
    want = rules(source, found[-1].get("out_interface"), family_of(source))
    return [_set(r) for r in found] == [_set(r) for r in want]


def _set(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule without its unset fields: a Pulumi state keeps no key whose value is null."""
    return {k: v for k, v in rule.items() if v is not None}
