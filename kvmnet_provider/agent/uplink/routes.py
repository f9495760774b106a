"""A link's addresses and routes given back in an order the kernel accepts: what the uplink's
two configurations and an adopted bridge's addresses (adopted.py) are made of. What the
kernel refuses is reported, never fatal to the rest."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

from ..errors import AgentError
from ..links import rtdump
from ..links.netlink import link_addresses

MAIN_TABLE = 254
RTN_UNICAST = 1


def index_of(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_message(ipr: Any, idx: int) -> Any:
    return ipr.get_links(idx)[0]


def change_address(ipr: Any, verb: str, idx: int, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    try:
        ipr.addr(verb, index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    except Exception as exc:  # add: EEXIST, already there; del: EADDRNOTAVAIL, ENODEV, gone
        if getattr(exc, "code", None) not in ((17,) if verb == "add" else (99, 19)):
            raise


def change_route(ipr: Any, verb: str, idx: int, route: dict[str, Any]) -> None:
    """Make (or delete) a recorded route through link idx (old records: main-table unicast)."""
    default = "0.0.0.0/0" if route["family"] == socket.AF_INET else "::/0"
    kwargs: dict[str, Any] = {
        "oif": idx,
        "table": route.get("table") or MAIN_TABLE,
        "family": route["family"],
        "proto": route["proto"],
        "scope": route["scope"],
        "type": route.get("type") or RTN_UNICAST,
        "dst": route["dst"] if route["dst"] != "default" else default,
    }
    if route.get("flags"):
        kwargs["flags"] = int(route["flags"]) & rtdump.RTNH_F_ONLINK
    for key in ("gateway", "priority", "prefsrc"):
        if route.get(key) is not None:
            kwargs[key] = route[key]
    try:
        ipr.route(verb, **kwargs)
    except Exception as exc:  # add: EEXIST, already there; del: ESRCH, ENODEV, gone
        if getattr(exc, "code", None) not in ((17,) if verb == "add" else (3, 19)):
            raise


def why(exc: Exception) -> str:  # a netlink error says (code, text): the text is enough
    code = getattr(exc, "code", None)
    return os.strerror(code) if isinstance(code, int) else str(exc)


def put_back(ipr: Any, idx: int, addresses: list[str], routes: list[dict[str, Any]]) -> list[str]:
    """Give link idx its addresses, then its routes in an order the kernel accepts. What the
    kernel refuses is skipped, not fatal: the rest goes on; the refusals are returned."""
    refused = []
    # IPv4 as listed (the first of a subnet is its primary); IPv6 listed newest first.
    for cidr in [a for a in addresses if ":" not in a] + [a for a in addresses[::-1] if ":" in a]:
        try:
            change_address(ipr, "add", idx, cidr)
        except Exception as exc:
            refused.append(f"address {cidr}: {why(exc)}")
    pending = rtdump.route_order(routes, addresses)
    while pending:  # a route refused for want of another may pass once that one is made
        failed: list[tuple[dict[str, Any], Exception]] = []
        for route in pending:
            try:
                change_route(ipr, "add", idx, route)
            except Exception as exc:
                failed.append((route, exc))
        if len(failed) == len(pending):
            refused += [f"route {rtdump.describe_route(r)}: {why(e)}" for r, e in failed]
            break
        pending = [r for r, _ in failed]
    return refused


def apply_addresses(ipr: Any, cfg: dict[str, Any]) -> list[str]:
    """Give the link cfg["link"] exactly cfg["addresses"], then its routes cfg["routes"] (the
    kernel drops a route with the address it needed), and cfg["alias"] when given: the change
    to an adopted bridge's addresses, and the restore that undoes it."""
    idx = index_of(ipr, cfg["link"])
    if idx is None:
        raise AgentError("missing", f"{cfg['link']} does not exist")
    for cidr in sorted(set(link_addresses(ipr, idx)) - set(cfg["addresses"])):
        change_address(ipr, "del", idx, cidr)
    if "alias" in cfg:
        ipr.link("set", index=idx, ifalias=cfg["alias"] or "")
    return put_back(ipr, idx, cfg["addresses"], cfg["routes"])
