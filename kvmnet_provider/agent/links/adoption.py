"""What an adopted bridge had before kvmnet took it over, kept in the host state so that the
release gives it back: its ifalias, addresses (in the kernel's order: the first of a subnet
is its primary), routes, MTU, up/down state and STP settings. An adopted bridge is released,
never deleted: it was there before kvmnet."""

from __future__ import annotations

import json
import os

from .. import hoststate
from ..rundir import read_text
from . import rtdump
from .state import describe

DOC = "adopted"


def remember(owner: str, link: rtdump.LinkRecord) -> None:
    """Record the link as it is now, just before `owner` marks it (a record left by a release
    that never finished is replaced: the link is unmarked again, so this is its state)."""
    live = describe(link, None, [])
    before = {
        "alias": link.alias,
        "addresses": rtdump.addresses(ordered=True).get(link.index, []),
        "routes": rtdump.link_routes(link.index),
        "mtu": live["mtu"],
        "up": live["up"],
        "stp": live.get("stp", False),
        "forward_delay": live.get("forward_delay", 0),
    }
    with hoststate.locked(DOC) as doc:
        doc[owner] = {"link": link.name, "before": before}


def adopted(owner: str) -> bool:
    """Whether `owner` adopted its bridge. Read without the lock (the document is replaced
    whole) and without making the books' directory: every bridge update asks."""
    ino = os.stat("/proc/self/ns/net").st_ino
    text = read_text(hoststate.ROOT / f"netns-{ino}" / f"{DOC}.json")
    return text is not None and owner in json.loads(text)
