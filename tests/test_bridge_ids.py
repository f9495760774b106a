"""A replaced bridge gets another id, so the taps on it follow: the providers' ids and
diffs, in process (no host, no engine)."""

from __future__ import annotations

from pulumi.output import Unknown

from kvmnet_provider.resources.base import UNKNOWN
from kvmnet_provider.resources.links import TapPortProvider
from kvmnet_provider.resources.uplink import UplinkBridgeProvider


def test_a_tap_follows_its_bridge_being_made_anew() -> None:
    """bridge_id: a replaced bridge (unknown at preview, another after) updates its taps;
    a tap recorded before the field existed is not touched for it."""
    provider = TapPortProvider()
    olds = {"name": "vif1.0", "bridge": "br-in", "bridge_id": "h:22/br-in@7", "owner": "o"}
    assert not provider.diff("id", olds, dict(olds)).changes
    assert provider.diff("id", olds, {**olds, "bridge_id": UNKNOWN}).changes
    assert provider.diff("id", olds, {**olds, "bridge_id": Unknown()}).changes
    assert provider.diff("id", olds, {**olds, "bridge_id": "h:22/br-in@9"}).changes
    checked = provider.check({}, {**olds, "connection": {"host": "h"}, "bridge_id": Unknown()})
    assert not checked.failures, checked.failures
    before = {k: v for k, v in olds.items() if k != "bridge_id"}
    assert not provider.diff("id", before, olds).changes
    assert provider.diff("id", before, {**olds, "bridge_id": UNKNOWN}).changes
    assert "bridge_id" not in provider.spec({**olds, "connection": {}})


def test_an_uplink_bridge_made_anew_has_another_id() -> None:
    """UplinkBridge's id names its ifindex as Bridge's does, so its taps follow a replacement
    (bridge_id); an agent that says no ifindex, and state from before, keep the old form."""
    provider = UplinkBridgeProvider()
    props = {"connection": {"host": "h", "port": 22}, "name": "br-in", "nic": "eth0"}
    assert provider.resource_id({**props, "ifindex": 7}) == "h:22/br-in<eth0@7"
    assert provider.resource_id({**props, "ifindex": 9.0}) == "h:22/br-in<eth0@9"
    assert provider.resource_id({**props, "ifindex": None}) == "h:22/br-in<eth0"
    live = {"state": "bridged", "mac": "52:54:00:00:00:01", "ifindex": 7, "addresses": [],
            "moved_routes": [], "previous_addresses": []}  # fmt: skip
    assert provider.overlay(live)["ifindex"] == 7
    # State from before the ifindex: its outputs lack it, and nothing the diff sees changes.
    olds = {**props, "owner": "o", "addresses": [], "mtu": None, "rollback_seconds": 30,
            "state": "bridged", "mac": "52:54:00:00:00:01"}  # fmt: skip
    assert not provider.diff("h:22/br-in<eth0", olds, {**olds, "ifindex": None}).changes
