"""Link changes (bridges, taps, deletes): rtnetlink requests of the agent's own (rtwrite.py),
without pyroute2; the agent loads this module at the first change."""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    from ..server import outcomes
    from .bridges import Links
    from .rtwrite import Rtnl

    links = Links(Rtnl())
    return {
        "link.delete": lambda a: links.link_delete(a["name"], a["owner"]),
        "link.delete.many": lambda a: outcomes("link.delete", links.link_delete_many(a["items"])),
        "bridge.create": links.bridge_create,
        "bridge.update": links.bridge_update,
        "tap.create": links.tap_create,
        "tap.update": links.tap_update,
    }
