"""Link reads answered from one dump of the host's links and one of its addresses.

`pulumi refresh` reads every resource; the reads that wait for one host's session leave as one
`link.read.many` request (AgentSession.call_batched), and the agent answers them, and the reads
after them, from one dump (kept by readcache.py until a request may change the host) instead of
one RTM_GETLINK, one address query and one for the master's name each.
"""

from __future__ import annotations

import ipaddress
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..spec import validate
from ..spec.validate import InvalidInput
from . import readcache
from .links import Links


@dataclass(frozen=True)
class LinkDump:
    by_name: dict[str, Any]  # name -> RTM_NEWLINK message
    names: dict[int, str]  # ifindex -> name
    addresses: dict[int, list[str]]  # ifindex -> sorted CIDR strings


def take_dump(links: Links) -> LinkDump:
    taken = time.monotonic()
    by_name: dict[str, Any] = {}
    names: dict[int, str] = {}
    for msg in links.ipr.get_links():
        name = msg.get_attr("IFLA_IFNAME")
        by_name[name] = msg
        names[int(msg["index"])] = name
    book: dict[int, list[str]] = defaultdict(list)
    for msg in links.ipr.get_addr():
        # As netlink.link_addresses gives them: without the kernel's IPv6 link-local ones.
        iface = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        if not (iface.version == 6 and iface.ip.is_link_local):
            book[int(msg["index"])].append(str(iface))
    dump = LinkDump(by_name, names, {idx: sorted(a) for idx, a in book.items()})
    readcache.keep(dump, taken)
    return dump


def describe(links: Links, dump: LinkDump, name: str) -> dict[str, Any] | None:
    """What Links.read answers for `name`, from the dump."""
    msg = dump.by_name.get(validate.ifname(name))
    if msg is None:
        return None
    master_idx = msg.get_attr("IFLA_MASTER")
    return links._describe(
        msg,
        master=dump.names.get(int(master_idx)) if master_idx else None,
        addresses=dump.addresses.get(int(msg["index"]), []),
    )


def link_read(links: Links, name: str) -> dict[str, Any] | None:
    """One link read: from a dump still valid, else its own query."""
    dump = readcache.fresh()
    return links.read(name) if dump is None else describe(links, dump, name)


def link_read_many(links: Links, items: list[dict[str, Any]]) -> list[Any]:
    """Per item (a `name`): what Links.read answers for it, or the exception raised for it."""
    dump = readcache.fresh() or take_dump(links)
    results: list[Any] = []
    for item in items:
        try:
            results.append(describe(links, dump, item["name"]))
        except Exception as exc:
            results.append(exc)
    return results


def link_read_all(links: Links) -> dict[str, dict[str, Any]]:
    """Every link of the host, by name, as Links.read describes each: a new dump (the
    provider keeps the listing itself, see resources/linkreads.py)."""
    dump = take_dump(links)
    described: dict[str, dict[str, Any]] = {}
    for name in dump.by_name:
        try:
            state = describe(links, dump, name)
        except InvalidInput:
            continue  # a name kvmnet would never manage (nor be asked to read)
        if state is not None:
            described[name] = state
    return described
