"""Repairs that repair: a bridge made again keeps its MAC; a guest whose tap was made again
reads as cut off and is restarted by the next update (no engine, no host)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from kvmnet_provider.agent.guests import operations, taps
from kvmnet_provider.agent.links.bridges import owner_mac
from kvmnet_provider.resources.guest import QemuGuestProvider

CONN = {"host": "198.18.0.10", "known_hosts": "/tmp/kh", "private_key_path": "/tmp/id"}


def test_bridge_mac_is_the_owners_locally_administered_unicast() -> None:
    mac = owner_mac("proj/dev/Bridge/br")
    assert mac == owner_mac("proj/dev/Bridge/br")  # made again: the same gateway
    assert mac != owner_mac("proj/dev/Bridge/br2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01, mac  # locally administered, unicast
    assert len(bytes.fromhex(mac.replace(":", ""))) == 6


def test_replaced_taps_compares_the_recorded_index(monkeypatch: pytest.MonkeyPatch) -> None:
    live = {"t0": 7, "t1": 9}

    def index(name: str) -> int:
        if name not in live:
            raise OSError("no such device")
        return live[name]

    monkeypatch.setattr(socket, "if_nametoindex", index)
    assert taps.replaced({"tap_indexes": {"t0": 7, "t1": 9}}) == []
    assert taps.replaced({"tap_indexes": {"t0": 7, "t1": 8}}) == ["t1"]  # made again
    assert taps.replaced({"tap_indexes": {"t0": 7, "gone": 3}}) == ["gone"]
    assert taps.replaced({}) == []  # started by an agent that kept no record: no claim
    meta = {"argv_sha256": "a", "disk_key": "d", "tap_indexes": {"t0": 7}}
    assert not operations.restart_needed(meta, "a", "d")
    assert operations.restart_needed(meta, "b", "d")
    live["t0"] = 12
    assert operations.restart_needed(meta, "a", "d")


def guest(**overrides: Any) -> dict[str, Any]:
    return {
        "connection": CONN,
        "owner": "proj/dev/QemuGuest/g1",
        "name": "g1",
        "memory_mib": 128,
        "kernel": "/img/vmlinuz",
        "nics": [{"tap": "vif1.0", "mac": "52:54:00:aa:00:01", "model": "virtio-net-pci"}],
        **overrides,
    }


def test_a_guest_read_as_cut_off_is_an_update_not_a_replacement() -> None:
    provider = QemuGuestProvider()
    news = guest()
    assert not provider.diff("id", guest(replaced_taps=[]), news).changes
    assert not provider.diff("id", guest(), news).changes  # state of an older kvmnet
    cut = provider.diff("id", guest(replaced_taps=["vif1.0"]), news)
    assert cut.changes and not cut.replaces
    renamed = provider.diff("id", guest(replaced_taps=["vif1.0"]), guest(name="g2"))
    assert renamed.changes and renamed.replaces  # a replacement starts it anew anyway


class FakeAgent:
    """Answers guest.start and guest.probe; records the ops asked."""

    def __init__(self) -> None:
        self.ops: list[str] = []

    def call(self, op: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        self.ops.append(op)
        if op == "guest.probe":
            return {"addresses": []}
        return {"name": args["name"], "pid": 42, "status": "running", "replaced_taps": []}


def test_the_update_of_a_cut_off_guest_restarts_it_like_any_restart() -> None:
    """The restart goes through host_update, so it waits for `ready` like an edit's restart."""
    provider = QemuGuestProvider()
    agent = FakeAgent()
    out = provider.host_update(agent, guest(replaced_taps=["vif1.0"]), guest())  # type: ignore[arg-type]
    assert agent.ops[0] == "guest.start" and out["replaced_taps"] == []
    agent = FakeAgent()
    provider.host_update(agent, guest(replaced_taps=[], status="running"), guest())  # type: ignore[arg-type]
    assert agent.ops[0] == "guest.read"  # nothing asked for a restart: the guest is only read
