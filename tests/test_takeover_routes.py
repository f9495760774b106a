"""The bridged model's takeover puts a NIC's routes back in an order the kernel accepts, and
a route the kernel refuses does not stop the others; a boot's takeover makes the bridge at
its recorded ifindex when that is free."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.agent.links.rtdump import RTNH_F_ONLINK, describe_route, route_order
from kvmnet_provider.agent.uplink import routes as putback
from kvmnet_provider.agent.uplink import uplink

LINK, UNIVERSE = 253, 0


def route(dst: str, gateway: str | None = None, **extra: Any) -> dict[str, Any]:
    family = socket.AF_INET6 if ":" in (gateway or dst) else socket.AF_INET
    scope = LINK if gateway is None else UNIVERSE
    base = {"family": family, "dst": dst, "gateway": gateway, "proto": 3, "scope": scope}
    return base | {"priority": None, "prefsrc": None, "flags": 0, "table": 254, "type": 1} | extra


def order(routes: list[dict[str, Any]], addresses: list[str]) -> list[str]:
    return [describe_route(r) for r in route_order(routes, addresses)]


def test_rented_server_layout_link_route_before_the_default() -> None:
    # As the kernel lists them: `default via GW` before `GW dev eth0 scope link`.
    listed = [route("default", "203.0.113.1"), route("203.0.113.1/32")]
    assert order(listed, ["203.0.113.10/32"]) == ["203.0.113.1/32", "default via 203.0.113.1"]


def test_onlink_gateway_outside_the_subnet_needs_nothing_before_it() -> None:
    listed = [
        route("default", "198.51.100.1", flags=RTNH_F_ONLINK),
        route("10.0.0.0/8", "192.168.1.254"),
    ]
    assert order(listed, ["192.168.1.5/24"]) == [
        "default via 198.51.100.1 onlink",
        "10.0.0.0/8 via 192.168.1.254",
    ]


def test_ipv6_link_local_gateway_is_on_link() -> None:
    listed = [route("default", "fe80::1", priority=1024), route("default", "203.0.113.1")]
    got = order(listed, ["203.0.113.10/32", "fd00::10/64"])
    assert got == ["default via fe80::1", "default via 203.0.113.1"]  # the v4 one never reachable


def test_gateway_reached_through_a_route_listed_after_it() -> None:
    listed = [
        route("10.1.0.0/16", "10.2.0.1"),  # its gateway needs the next route
        route("10.2.0.0/24", "192.168.1.254"),
        route("192.168.9.0/24"),
        route("default", "192.168.9.1"),
    ]
    assert order(listed, ["192.168.1.5/24"]) == [
        "192.168.9.0/24",
        "10.2.0.0/24 via 192.168.1.254",
        "10.1.0.0/16 via 10.2.0.1",
        "default via 192.168.9.1",
    ]


def test_host_scope_before_link_scope_and_records_of_before_flags_were_kept() -> None:
    old = {"family": socket.AF_INET, "dst": "default", "gateway": "10.0.0.1", "proto": 3}
    listed = [old | {"scope": 0}, route("10.0.0.0/24"), route("10.0.0.9/32", scope=254)]
    assert order(listed, ["10.0.0.5/32"]) == ["10.0.0.9/32", "10.0.0.0/24", "default via 10.0.0.1"]


def test_unreachable_gateway_comes_last_and_is_still_tried() -> None:
    listed = [route("default", "172.16.0.1"), route("10.0.0.0/24")]
    assert order(listed, []) == ["10.0.0.0/24", "default via 172.16.0.1"]


class FakeKernel:
    """Takes an address always; a gateway route only once its gateway is on a link-scope
    route or an address's network; refuses the routes named in `refuse`."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = refuse
        self.networks: list[Any] = []
        self.made: list[str] = []

    def addr(self, command: str, index: int, address: str, prefixlen: int) -> None:
        self.networks.append(ipaddress.ip_interface(f"{address}/{prefixlen}").network)

    def route(self, command: str, **kwargs: Any) -> None:
        dst, gateway = kwargs["dst"], kwargs.get("gateway")
        onlink = kwargs.get("flags", 0) & RTNH_F_ONLINK
        if dst in self.refuse:
            raise OSError(22, "Invalid argument")
        if gateway and not onlink and not ipaddress.ip_address(gateway).is_link_local:
            if not any(ipaddress.ip_address(gateway) in n for n in self.networks):
                raise OSError(101, "Network is unreachable")
        if not gateway:
            self.networks.append(ipaddress.ip_network(dst))
        self.made.append(dst)


def test_a_refused_route_does_not_stop_the_rest() -> None:
    kernel = FakeKernel(refuse=("10.9.0.0/16",))
    routes = [route("default", "203.0.113.1"), route("10.9.0.0/16"), route("203.0.113.1/32")]
    refused = putback.put_back(kernel, 7, ["203.0.113.10/32"], routes)
    assert kernel.made == ["203.0.113.1/32", "0.0.0.0/0"]
    assert len(refused) == 1 and refused[0].startswith("route 10.9.0.0/16: ")


def test_a_refused_address_is_reported_and_the_routes_still_go_back() -> None:
    class NoAddress(FakeKernel):
        def addr(self, command: str, index: int, address: str, prefixlen: int) -> None:
            raise OSError(99, "Cannot assign requested address")

    kernel = NoAddress()
    refused = putback.put_back(kernel, 7, ["10.0.0.5/24"], [route("10.0.0.0/24")])
    assert kernel.made == ["10.0.0.0/24"]
    assert refused[0].startswith("address 10.0.0.5/24: ")


def test_a_refused_apply_is_undone_at_once_and_says_what_was_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def bridged(ipr: Any, cfg: dict[str, Any]) -> list[str]:
        calls.append("bridged")
        return ["route default via 10.0.0.1: Network is unreachable"]

    def plain(ipr: Any, cfg: dict[str, Any]) -> list[str]:
        calls.append("plain")
        return []

    monkeypatch.setitem(uplink.APPLY, "bridged", bridged)
    monkeypatch.setitem(uplink.APPLY, "plain", plain)
    with pytest.raises(AgentError) as caught:
        uplink._apply_or_undo(None, "bridged", {}, {}, "bridging eth0")
    assert calls == ["bridged", "plain"]
    assert "undone at once" in str(caught.value) and "default via 10.0.0.1" in str(caught.value)


# --- the provider: an undo is confirmed over a new login before the rollback is disarmed ---
class FakeSession:
    def __init__(self, log: list[str], answers: dict[str, Any]) -> None:
        self.log, self.answers = log, answers

    def call(self, op: str, args: dict[str, Any], timeout: float = 0) -> Any:
        self.log.append(op)
        answer = self.answers.get(op)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _provider_run(
    monkeypatch: pytest.MonkeyPatch, op_answer: Any, confirm_answer: Any
) -> tuple[list[str], Exception | dict[str, Any]]:
    from kvmnet_provider.connection import HostSettings
    from kvmnet_provider.resources import rollback
    from kvmnet_provider.resources import uplink as provider

    log: list[str] = []
    first = FakeSession(log, {"uplink.takeover": op_answer})
    fresh = FakeSession(log, {"uplink.confirm": confirm_answer, "uplink.read": {"state": "ok"}})
    monkeypatch.setattr(rollback, "agent_session", lambda settings: first)
    monkeypatch.setattr(rollback, "fresh_session", lambda settings: fresh)
    props = {
        "connection": HostSettings(host="h", known_hosts="/dev/null").to_props(),
        "rollback_seconds": 30,
        "owner": "p/s/UplinkBridge/u",
        "nic": "eth0",
    }
    try:
        result: Exception | dict[str, Any] = provider.UplinkBridgeProvider()._protected(
            props, "uplink.takeover", {}
        )
    except Exception as exc:
        result = exc
    return log, result


def test_an_undone_takeover_is_confirmed_by_a_new_login_then_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kvmnet_provider.connection import AgentCallError

    undone = AgentCallError("h", "failed", "bridging eth0 failed and was undone at once: x")
    log, result = _provider_run(monkeypatch, undone, {"confirmed": True})
    assert log == ["uplink.takeover", "uplink.confirm"]  # disarmed only once seen reachable
    assert result is undone


def test_a_refusal_before_anything_changed_is_reported_as_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kvmnet_provider.connection import AgentCallError

    refused = AgentCallError("h", "conflict", "NIC eth0 is already a port of bridge br0")
    never_armed = AgentCallError("h", "invalid", "no rollback is armed with that token")
    log, result = _provider_run(monkeypatch, refused, never_armed)
    assert log == ["uplink.takeover", "uplink.confirm"]
    assert result is refused


def test_a_takeover_that_worked_is_confirmed_and_read(monkeypatch: pytest.MonkeyPatch) -> None:
    log, result = _provider_run(monkeypatch, {"token": "t"}, {"confirmed": True})
    assert log == ["uplink.takeover", "uplink.confirm", "uplink.read"]
    assert result == {"state": "ok"}


# --- the host's rollback: a restore no new login has heard is applied again -------------------
def _rollback(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, heard_after: int | None) -> int:
    import io
    import json
    import sys
    import time

    class NoKernel:
        def __enter__(self) -> NoKernel:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    applies: list[int] = []
    armed = tmp_path / "tok.armed"

    def plain(ipr: Any, cfg: dict[str, Any]) -> list[str]:
        applies.append(1)
        if heard_after is not None and len(applies) >= heard_after:
            armed.unlink()  # as uplink.status does when a new login reads the result
        return []

    monkeypatch.setattr(uplink, "_dir", lambda: tmp_path)
    monkeypatch.setattr(uplink, "iproute_class", lambda: NoKernel)
    monkeypatch.setitem(uplink.APPLY, "plain", plain)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    plan = {"target": "plain", "cfg": {}, "seconds": 0, "deadline_monotonic": time.monotonic()}
    armed.write_text(json.dumps(plan))
    uplink.rollback_main(str(armed))
    assert not armed.exists()
    return len(applies)


def test_an_unheard_restore_is_applied_again_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    assert _rollback(monkeypatch, tmp_path, heard_after=None) == uplink.ROLLBACK_TRIES


def test_a_heard_restore_is_not_applied_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    assert _rollback(monkeypatch, tmp_path, heard_after=1) == 1


class FakeLinks:
    """Just enough of IPRoute for add_link: some ifindexes taken."""

    def __init__(self, taken: set[int]) -> None:
        self.taken = taken
        self.links: dict[str, int] = {}

    def link(self, verb: str, ifname: str, index: int | None = None, **_: Any) -> None:
        assert verb == "add"
        if index in self.taken:
            raise OSError(17, "File exists")
        self.links[ifname] = index or max(self.taken | {0}) + 1

    def link_lookup(self, ifname: str) -> list[int]:
        return [self.links[ifname]] if ifname in self.links else []


def test_a_bridge_made_at_boot_gets_its_recorded_ifindex_when_free() -> None:
    from kvmnet_provider.agent.links.netlink import add_link

    assert add_link(FakeLinks({1, 2}), 7, ifname="br0", kind="bridge") == 7
    assert add_link(FakeLinks({1, 2, 7}), 7, ifname="br0", kind="bridge") == 8  # taken
    assert add_link(FakeLinks({1, 2}), None, ifname="br0", kind="bridge") == 3
