"""An adopted bridge's rules (no engine, no host): addresses not given are kept and never
drift, a list given (empty too) is exact and is set under the host's rollback, and an
adopted bridge is released, not deleted. The agent's restore of a link's addresses."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from kvmnet_provider.agent.boot import records
from kvmnet_provider.agent.uplink import routes
from kvmnet_provider.resources import links
from kvmnet_provider.resources.links import BridgeProvider

CONN = {"host": "198.18.0.11"}


def props(**kw: Any) -> dict[str, Any]:
    return {"connection": CONN, "owner": "kvt/dev/Bridge/br", "name": "br-mgmt", **kw}


def checked(**kw: Any) -> dict[str, Any]:
    result = BridgeProvider().check({}, props(**kw))
    assert not result.failures, result.failures
    return dict(result.inputs)


def test_not_given_is_kept_on_an_adopted_bridge_and_none_on_a_bridge_of_ours() -> None:
    assert checked(adopt=True)["addresses"] is None
    assert checked(adopt=False)["addresses"] == []
    assert checked()["addresses"] == []


def test_an_explicit_list_is_exact_even_empty() -> None:
    assert checked(adopt=True, addresses=[])["addresses"] == []
    assert checked(adopt=True, addresses=["10.0.9.1/24"])["addresses"] == ["10.0.9.1/24"]


def test_check_names_the_property() -> None:
    result = BridgeProvider().check({}, props(adopt=True, addresses="10.0.9.1/24"))
    assert [f.property for f in result.failures] == ["addresses"]
    assert result.failures[0].reason.startswith("addresses must be a list")
    result = BridgeProvider().check({}, props(adopt=True, rollback_seconds=2))
    assert [f.property for f in result.failures] == ["rollback_seconds"]


def test_the_library_tells_not_given_from_empty() -> None:
    conn = links.HostSettings(host="198.18.0.11", known_hosts="/dev/null")
    assert links.BridgeArgs(conn, "br0", adopt=True).addresses is None
    assert links.BridgeArgs(conn, "br0", adopt=True, addresses=[]).addresses == []


LIVE = {"ifindex": 4, "mac": "aa:bb:cc:dd:ee:ff", "up": True, "stp": False,
        "forward_delay": 0, "addresses": ["198.18.7.11/24"]}  # fmt: skip


def test_kept_addresses_are_no_drift() -> None:
    provider = BridgeProvider()
    inputs = checked(adopt=True)
    outs = {**inputs, **provider.overlay(inputs, LIVE)}
    assert outs["addresses"] is None
    assert not provider.diff("id", outs, inputs).changes
    # Given explicitly, what the host has is compared: a change there is drift.
    given = checked(adopt=True, addresses=["198.18.7.11/24"])
    outs = {**given, **provider.overlay(given, {**LIVE, "addresses": []})}
    assert provider.diff("id", outs, given).changes


def test_a_state_without_rollback_seconds_is_no_change() -> None:
    inputs = checked(adopt=True)
    olds = {k: v for k, v in inputs.items() if k != "rollback_seconds"}
    assert not BridgeProvider().diff("id", olds, inputs).changes


class Agent:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls: list[str] = []

    def call(self, op: str, args: dict[str, Any], timeout: float = 0) -> Any:
        self.calls.append(op)
        return self.answer

    def call_batched(self, op: str, args: dict[str, Any]) -> Any:
        self.calls.append(op)
        return {"deleted": True}


@pytest.fixture()
def protected(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def fake(props: dict[str, Any], op: str, args: dict[str, Any], *rest: Any) -> dict[str, Any]:
        seen.append((op, args))
        return {**LIVE, "addresses": sorted(args.get("addresses") or [])}

    monkeypatch.setattr(links, "protected", fake)
    return seen


def test_an_adopted_bridges_addresses_change_only_under_the_rollback(
    protected: list[tuple[str, dict[str, Any]]],
) -> None:
    inputs = checked(adopt=True, addresses=["198.18.7.12/24"])
    agent = Agent({**LIVE, "adopted": True})
    live = BridgeProvider().host_create(agent, inputs)  # type: ignore[arg-type]
    assert [op for op, _ in protected] == ["adopted.readdress"]
    assert protected[0][1]["addresses"] == ["198.18.7.12/24"]
    assert live["addresses"] == ["198.18.7.12/24"]


def test_no_rollback_when_kept_unchanged_or_not_adopted(
    protected: list[tuple[str, dict[str, Any]]],
) -> None:
    provider = BridgeProvider()
    provider.host_create(Agent({**LIVE, "adopted": True}), checked(adopt=True))  # type: ignore[arg-type]
    same = checked(adopt=True, addresses=["198.18.7.11/24"])
    provider.host_create(Agent({**LIVE, "adopted": True}), same)  # type: ignore[arg-type]
    made = checked(adopt=True, addresses=["10.0.9.1/24"])  # no such bridge: made, not adopted
    provider.host_create(Agent({**LIVE, "addresses": ["10.0.9.1/24"]}), made)  # type: ignore[arg-type]
    assert protected == []


def test_an_adopted_bridge_is_released_and_ours_deleted(
    protected: list[tuple[str, dict[str, Any]]],
) -> None:
    provider, agent = BridgeProvider(), Agent({})
    provider.host_delete(agent, checked(adopt=True))  # type: ignore[arg-type]
    assert [op for op, _ in protected] == ["adopted.release"]
    provider.host_delete(agent, checked())  # type: ignore[arg-type]
    assert agent.calls == ["link.delete"] and len(protected) == 1


def test_the_release_drops_the_bridges_boot_record() -> None:
    assert records.is_mutation("adopted.release")
    assert records.REMOVES["adopted.release"] == ("bridge",)


class Kernel:
    """A link with addresses; routes refused when their gateway is on no address's network."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = list(addresses)
        self.routes: list[str] = []
        self.alias: str | None = None

    def link_lookup(self, ifname: str) -> list[int]:
        return [4] if ifname == "br-mgmt" else []

    def get_addr(self, index: int) -> list[Any]:
        return [Addr(a) for a in self.addresses]

    def addr(self, verb: str, index: int, address: str, prefixlen: int) -> None:
        cidr = f"{address}/{prefixlen}"
        if verb == "del":
            self.addresses.remove(cidr)
        elif cidr not in self.addresses:
            self.addresses.append(cidr)

    def link(self, verb: str, index: int, **kw: Any) -> None:
        self.alias = kw.get("ifalias", self.alias)

    def route(self, verb: str, **kw: Any) -> None:
        gateway = ipaddress.ip_address(kw["gateway"])
        if not any(gateway in ipaddress.ip_interface(a).network for a in self.addresses):
            raise OSError(101, "Network is unreachable")
        self.routes.append(kw["dst"])


class Addr:
    def __init__(self, cidr: str) -> None:
        self.iface = ipaddress.ip_interface(cidr)
        self.prefixlen = self.iface.network.prefixlen

    def get_attr(self, name: str) -> str:
        return str(self.iface.ip)

    def __getitem__(self, key: str) -> int:
        return self.prefixlen


DEFAULT = {"family": 2, "dst": "default", "gateway": "198.18.7.254", "proto": 3, "scope": 0}


def test_apply_addresses_makes_them_exact_and_puts_the_routes_back() -> None:
    kernel = Kernel(["198.18.7.11/24", "10.9.0.1/24"])
    cfg = {"link": "br-mgmt", "addresses": ["198.18.7.11/24"], "routes": [DEFAULT], "alias": ""}
    assert routes.apply_addresses(kernel, cfg) == []
    assert kernel.addresses == ["198.18.7.11/24"] and kernel.routes == ["0.0.0.0/0"]
    assert kernel.alias == ""


def test_apply_addresses_reports_a_route_the_new_addresses_cannot_carry() -> None:
    kernel = Kernel(["198.18.7.11/24"])
    cfg = {"link": "br-mgmt", "addresses": ["10.9.0.1/24"], "routes": [DEFAULT]}
    refused = routes.apply_addresses(kernel, cfg)
    assert kernel.addresses == ["10.9.0.1/24"] and kernel.alias is None
    assert len(refused) == 1 and refused[0].startswith("route default via 198.18.7.254: ")


def test_the_capture_guard_counts_no_network_the_bridge_already_carries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kvmnet_provider.agent.errors import AgentError
    from kvmnet_provider.agent.links import bridges, overlap
    from kvmnet_provider.agent.links.rtdump import LinkRecord

    mgmt = LinkRecord(4, "br-mgmt", 1, None, 1500, 0, "", "bridge")
    host = overlap.HostNetworks({4: mgmt}, {4: ["198.18.7.11/24"]}, [])
    monkeypatch.setattr(overlap, "read_host", lambda: host)
    monkeypatch.setattr(bridges.ssh_session, "session_peers", lambda: frozenset({"198.18.7.1"}))
    bridges.refuse_capture({"name": "br-mgmt", "addresses": ["198.18.7.77/24"]})
    with pytest.raises(AgentError, match="198.18.7.1, the address kvmnet's SSH session"):
        bridges.refuse_capture({"name": "br-other", "addresses": ["198.18.7.77/24"]})
