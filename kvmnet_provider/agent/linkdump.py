"""Many link reads answered from one dump of the host's links and one of its addresses.

`pulumi refresh` reads every resource; the reads that wait for one host's session leave as one
`link.read.many` request (AgentSession.call_batched), and here they cost two netlink dumps
instead of one RTM_GETLINK (plus one RTM_GETADDR, plus one for the master's name) each.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Any

from ..spec import validate
from .links import Links


def address_book(links: Links) -> dict[int, list[str]]:
    """Every link's addresses, by ifindex, as link_addresses gives them for one link."""
    book: dict[int, list[str]] = defaultdict(list)
    for msg in links.ipr.get_addr():
        iface = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        if not (iface.version == 6 and iface.ip.is_link_local):
            book[int(msg["index"])].append(str(iface))
    return {idx: sorted(addresses) for idx, addresses in book.items()}


def link_read_many(links: Links, items: list[dict[str, Any]]) -> list[Any]:
    """Per item (a `name`): what Links.read answers for it, or the exception raised for it."""
    by_name: dict[str, Any] = {}
    names: dict[int, str] = {}
    for msg in links.ipr.get_links():
        name = msg.get_attr("IFLA_IFNAME")
        by_name[name] = msg
        names[int(msg["index"])] = name
    addresses = address_book(links)
    results: list[Any] = []
    for item in items:
        try:
            msg = by_name.get(validate.ifname(item["name"]))
        except Exception as exc:
            results.append(exc)
            continue
        if msg is None:
            results.append(None)
            continue
        master_idx = msg.get_attr("IFLA_MASTER")
        results.append(
            links._describe(
                msg,
                master=names.get(int(master_idx)) if master_idx else None,
                addresses=addresses.get(int(msg["index"]), []),
            )
        )
    return results
