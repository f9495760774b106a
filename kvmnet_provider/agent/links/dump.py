"""Link reads answered from one dump of the host's links and one of its addresses.

`pulumi refresh` reads every resource; the reads that wait for one host's session leave as one
`link.read.many` request (AgentSession.call_batched), and the agent answers them, and the reads
after them, from one dump (kept by readcache.py until a request may change the host) instead of
one query per link. The dumps come from rtdump.py, not pyroute2: a session that only reads
never imports pyroute2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ...spec import validate
from ...spec.validate import InvalidInput
from . import readcache, rtdump
from .rtdump import LinkRecord
from .state import describe as describe_link


@dataclass(frozen=True)
class LinkDump:
    by_name: dict[str, LinkRecord]
    names: dict[int, str]  # ifindex -> name
    addresses: dict[int, list[str]]  # ifindex -> sorted CIDR strings


def take_dump() -> LinkDump:
    taken = time.monotonic()
    records = rtdump.links()
    dump = LinkDump(
        by_name={r.name: r for r in records},
        names={r.index: r.name for r in records},
        addresses=rtdump.addresses(),
    )
    readcache.keep(dump, taken)
    return dump


def describe(dump: LinkDump, name: str) -> dict[str, Any] | None:
    """What a read of `name` answers, from the dump: None when there is no such link."""
    link = dump.by_name.get(validate.ifname(name))
    if link is None:
        return None
    return describe_link(link, dump.names.get(link.master), dump.addresses.get(link.index, []))


def link_read(name: str) -> dict[str, Any] | None:
    """One link read: from a dump still valid, else a new one (two dumps of a host's links
    cost less than loading pyroute2 for one query)."""
    return describe(readcache.fresh() or take_dump(), name)


def link_read_many(items: list[dict[str, Any]]) -> list[Any]:
    """Per item (a `name`): what a read answers for it, or the exception raised for it."""
    dump = readcache.fresh() or take_dump()
    results: list[Any] = []
    for item in items:
        try:
            results.append(describe(dump, item["name"]))
        except Exception as exc:
            results.append(exc)
    return results


def link_read_all() -> dict[str, dict[str, Any]]:
    """Every link of the host, by name, as a read describes each: a new dump (the provider
    keeps the listing itself, see resources/linkreads.py)."""
    dump = take_dump()
    described: dict[str, dict[str, Any]] = {}
    for name in dump.by_name:
        try:
            state = describe(dump, name)
        except InvalidInput:
            continue  # a name kvmnet would never manage (nor be asked to read)
        if state is not None:
            described[name] = state
    return described
