"""Link changes (bridges, taps, deletes) through pyroute2: the agent loads this module, and
pyroute2 with it, at the first change; reads never need it (dump.py)."""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    from .netlink import iproute_class

    iproute = iproute_class()  # before .links imports from pyroute2: see netlink.py
    from ..server import outcomes
    from .bridges import Links

    links = Links(iproute())
    return {
        "link.delete": lambda a: links.link_delete(a["name"], a["owner"]),
        "link.delete.many": lambda a: outcomes("link.delete", links.link_delete_many(a["items"])),
        "bridge.create": links.bridge_create,
        "bridge.update": links.bridge_update,
        "tap.create": links.tap_create,
        "tap.update": links.tap_update,
    }
