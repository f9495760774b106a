"""IP forwarding, shared by every kvmnet stack on a host.

Each ForwardingSetting is a holder. The first holder records the value it found; the last
one to leave restores it. So forwarding is never turned off under another stack's feet,
and a host ends exactly as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...spec import validate
from ...spec.family import FAMILIES, IPV4, IPV6
from .. import hoststate

# By family name ("ipv4"), the key of the host state's holders and previous values.
SYSCTLS = {f.name: Path(f.forward_sysctl) for f in FAMILIES}


def _get(family: str) -> str:
    return SYSCTLS[family].read_text().strip()


def _set(family: str, value: str) -> None:
    SYSCTLS[family].write_text(value + "\n")


def _families(spec: dict[str, Any]) -> list[str]:
    return [IPV4.name] + ([IPV6.name] if spec.get("ipv6") else [])


def read(owner: str) -> dict[str, Any]:
    owner = validate.owner(owner)
    with hoststate.locked("forwarding") as doc:
        holders = doc.get("holders", {})
        return {
            IPV4.name: _get(IPV4.name) == "1",
            IPV6.name: _get(IPV6.name) == "1" if SYSCTLS[IPV6.name].exists() else False,
            "held": owner in holders,
            "holders": len(holders),
            "previous": doc.get("previous", {}),
        }


def acquire(spec: dict[str, Any]) -> dict[str, Any]:
    owner = validate.owner(spec["owner"])
    families = _families(spec)
    with hoststate.locked("forwarding") as doc:
        holders: dict[str, list[str]] = doc.setdefault("holders", {})
        previous: dict[str, str] = doc.setdefault("previous", {})
        for family in families:
            if family not in previous:
                previous[family] = _get(family)
        holders[owner] = families
        for family in families:
            _set(family, "1")
        _restore_unwanted(holders, previous)
    return read(owner)


def release(owner: str) -> dict[str, Any]:
    owner = validate.owner(owner)
    with hoststate.locked("forwarding") as doc:
        holders: dict[str, list[str]] = doc.setdefault("holders", {})
        previous: dict[str, str] = doc.setdefault("previous", {})
        holders.pop(owner, None)
        restored = _restore_unwanted(holders, previous)
    return {"restored": restored, "holders": len(holders)}


def _restore_unwanted(holders: dict[str, list[str]], previous: dict[str, str]) -> dict[str, str]:
    """Put back the recorded value of every family that no holder wants any more."""
    wanted = {family for families in holders.values() for family in families}
    restored = {}
    for family in list(previous):
        if family not in wanted:
            _set(family, previous.pop(family))
            restored[family] = _get(family)
    return restored
