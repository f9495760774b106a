"""Link changes (bridges, taps, deletes): rtnetlink requests of the agent's own (rtwrite.py),
without pyroute2; the agent loads this module at the first change."""

from __future__ import annotations

from typing import Any

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
        "bridge.readdress": lambda a: _adopted().readdress(a),
        # An adopted bridge is given back what it had; a bridge of ours is deleted.
        "bridge.release": lambda a: (
            _adopted().release(a) or {"token": None, **links.link_delete(a["name"], a["owner"])}
        ),
        "tap.create": links.tap_create,
        "tap.update": links.tap_update,
    }


def _adopted() -> Any:
    """The adopted bridges' operations, loaded at the first (they need pyroute2)."""
    from ..uplink import adopted

    return adopted
