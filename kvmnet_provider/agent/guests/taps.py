"""A guest's taps: checked before QEMU opens them, and watched for being made again.

QEMU holds the tap it opened at start. A tap deleted behind kvmnet's back and made again
(by `up`, or anyone) is a new interface on the bridge that no QEMU holds: the guest is cut
off until its QEMU opens the new one. The interface index tells the two apart.
"""

from __future__ import annotations

import socket
from typing import Any

from ..errors import AgentError
from ..links.netlink import iproute_class


def check(nics: list[dict[str, str]]) -> dict[str, int]:
    """Each NIC's tap exists and is a tap: given a missing name, QEMU would quietly create a
    tap of its own, on no bridge, and the guest would start cut off. Returns each tap's
    interface index, to be recorded with the guest."""
    if not nics:
        return {}
    IPRoute = iproute_class()  # the agent has it; the controller never gets here

    indexes: dict[str, int] = {}
    with IPRoute() as ipr:
        for nic in nics:
            found = ipr.link_lookup(ifname=nic["tap"])
            if not found:
                raise AgentError(
                    "missing",
                    f"tap {nic['tap']} does not exist on this host: declare it before the guest,"
                    " or, if the stack declares it, run `pulumi refresh` then `pulumi up`",
                )
            kind = ipr.get_links(found[0])[0].get(("linkinfo", "kind"))
            if kind != "tun":
                raise AgentError(
                    "invalid", f"{nic['tap']} is a {kind or 'plain'} link, not a tap device"
                )
            indexes[nic["tap"]] = int(found[0])
    return indexes


def replaced(meta: dict[str, Any]) -> list[str]:
    """The taps the guest's QEMU no longer holds: gone, or another interface by that name
    than the one it opened. A guest started without the record (an older agent) has none."""
    recorded = meta.get("tap_indexes")
    if not isinstance(recorded, dict):
        return []
    return sorted(tap for tap, index in recorded.items() if _index(tap) != index)


def _index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None
