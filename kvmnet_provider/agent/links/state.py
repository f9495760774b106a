"""What kvmnet reports of a link, from a LinkRecord: shared by the reads answered from
rtdump's dumps and by bridges.py, which turns pyroute2's messages into the same records. No
pyroute2 here, so a session that only reads never loads it."""

from __future__ import annotations

import pwd
from typing import Any

from ...spec.marks import OWNER_PREFIX
from .rtdump import LinkRecord

USER_HZ = 100  # IFLA_BR_FORWARD_DELAY is in clock ticks
IFF_UP = 1


def owner_tag(owner: str) -> str:
    return OWNER_PREFIX + owner


def owner_in(alias: str) -> str | None:
    return alias[len(OWNER_PREFIX) :] if alias.startswith(OWNER_PREFIX) else None


def user_name(uid: int | None) -> str | None:
    if uid is None or uid == 0xFFFFFFFF:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def describe(link: LinkRecord, master: str | None, addresses: list[str]) -> dict[str, Any]:
    """A link's state; `master` is the name of its master (None for none), `addresses` its
    sorted CIDR strings."""
    state: dict[str, Any] = {
        "name": link.name,
        "ifindex": link.index,
        "kind": link.kind,
        "mac": link.mac,
        "mtu": link.mtu,
        "up": bool(link.flags & IFF_UP),
        "master": master if link.master else None,
        "owner": owner_in(link.alias),
        "alias": link.alias,
        "addresses": addresses,
    }
    if link.kind == "bridge":
        state["stp"] = bool(link.data.get("IFLA_BR_STP_STATE"))
        state["forward_delay"] = int(round((link.data.get("IFLA_BR_FORWARD_DELAY") or 0) / USER_HZ))
    if link.kind == "tun":
        state["multi_queue"] = bool(link.data.get("IFLA_TUN_MULTI_QUEUE"))
        state["tun_type"] = link.data.get("IFLA_TUN_TYPE")
        state["owner_user"] = user_name(link.data.get("IFLA_TUN_OWNER"))
    return state
