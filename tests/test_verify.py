"""A network's verify: the probe's identity, the packets it sends and reads, the judgement of
what it saw against each model, and the settings' rules. No kernel: see test_verify_e2e.py."""

from __future__ import annotations

import ipaddress
import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest

from kvmnet_provider.agent.verify import checks, packets, spawn
from kvmnet_provider.agent.verify.probe import VerifySpec
from kvmnet_provider.errors import ConfigError
from kvmnet_provider.program.hosts import check_stack_config
from kvmnet_provider.resources.network_check import (
    FIXES,
    NetworkCheckProvider,
    failure_line,
    skipped_on_switch,
)
from kvmnet_provider.spec import verify, verify_probe
from kvmnet_provider.spec.validate import InvalidInput


def test_probe_names_fit_the_kernel_and_differ_per_network() -> None:
    host, peer = checks.probe_links("proj/stack/NetworkCheck/a")
    assert len(host) <= 15 and len(peer) <= 15
    assert host.startswith(checks.HOST_PREFIX) and peer.startswith(checks.PEER_PREFIX)
    assert host[4:] == peer[4:]
    assert checks.probe_links("proj/stack/NetworkCheck/b")[0] != host
    assert checks.probe_links("proj/stack/NetworkCheck/a") == (host, peer)  # found again


def test_probe_mac_is_locally_administered_unicast() -> None:
    mac = verify_probe.probe_mac("br-in")
    assert verify_probe.probe_mac("br-other") != mac
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01
    assert len(mac.split(":")) == 6


def test_probe_address_is_the_highest_free_one() -> None:
    assert verify_probe.probe_address("10.0.1.0/24", ["10.0.1.254"], None) == "10.0.1.253"
    taken = ["10.0.1.254", "10.0.1.253", "10.0.1.11"]
    assert verify_probe.probe_address("10.0.1.0/24", taken, None) == "10.0.1.252"
    # DHCP hands out the range: the probe stays below it
    rng = ["10.0.1.128", "10.0.1.253"]
    assert verify_probe.probe_address("10.0.1.0/24", ["10.0.1.254"], rng) == "10.0.1.127"
    with pytest.raises(ValueError, match="no free address"):
        verify_probe.probe_address("10.0.1.0/30", ["10.0.1.1", "10.0.1.2"], None)


def seen(**reached: bool) -> dict[str, dict[str, object]]:
    return {k: {"reached": v, "detail": f"{k} detail"} for k, v in reached.items()}


def test_nat_must_reach_the_outside_and_routed_must_not() -> None:
    assert all(o.ok for o in checks.judge("nat", seen(gateway=True, outside=True)))
    assert all(o.ok for o in checks.judge("routed", seen(gateway=True, outside=False)))
    assert all(o.ok for o in checks.judge("isolated", seen(outside=False)))
    (leak,) = [o for o in checks.judge("routed", seen(gateway=True, outside=True)) if not o.ok]
    assert leak.check == "outside" and "must not" in leak.reason
    (cut,) = [o for o in checks.judge("nat", seen(gateway=True, outside=False)) if not o.ok]
    assert cut.check == "outside" and "expected an answer" in cut.reason


def test_an_outside_the_host_cannot_reach_either_proves_nothing() -> None:
    dead = {"reached": False, "detail": "no answer"}
    for model in ("nat", "routed"):
        (outside,) = checks.judge(model, seen(outside=False), dead)
        assert outside.ok and not outside.ran and "set verifyTarget" in outside.reason
    (refused,) = checks.judge("routed", seen(outside=False), {"reached": True})
    assert refused.ok and refused.ran and "the host itself reaches it" in refused.reason
    (cut,) = checks.judge("nat", seen(outside=False), {"reached": True})
    assert not cut.ok and "the host itself reaches it" in cut.reason


def test_dns_dhcp_and_gateway_must_answer() -> None:
    outcomes = checks.judge(
        "nat", seen(dhcp=False, gateway=True, outside=True, dns=False, inbound=False)
    )
    assert [o.check for o in outcomes if not o.ok] == ["dns", "dhcp"]
    # reported in a fixed order (the forwards are judged from conntrack, after the rest)
    assert [o.check for o in outcomes] == [c for c in verify.CHECKS if c != "forwards"]


def test_icmp_echo_round_trip() -> None:
    request = packets.echo_request(0x1234, 1)
    assert packets.checksum(request) == 0  # a valid checksum sums to zero
    reply = bytes([0]) + request[1:]
    ip_header = bytes([0x45]) + b"\0" * 19
    assert packets.echo_reply_kind(ip_header + reply, 0x1234) == "reply"
    assert packets.echo_reply_kind(ip_header + reply, 0x4321) is None
    error = bytes([3, 1, 0, 0, 0, 0, 0, 0]) + ip_header + request[:8]
    assert packets.echo_reply_kind(ip_header + error, 0x1234) == "unreachable"


def dns_answer(query: bytes, address: str | None) -> bytes:
    query_id = struct.unpack("!H", query[:2])[0]
    answers = 1 if address else 0
    header = struct.pack("!HHHHHH", query_id, 0x8180, 1, answers, 0, 0)
    body = query[12:]
    if address:
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4)
        body += ipaddress.IPv4Address(address).packed
    return header + body


def test_dns_query_and_answer() -> None:
    query = packets.dns_query(7, "g1.kvm.internal")
    assert b"\x02g1\x03kvm\x08internal\x00" in query
    assert packets.dns_addresses(dns_answer(query, "10.0.1.11"), 7) == ["10.0.1.11"]
    assert packets.dns_addresses(dns_answer(query, None), 7) == []
    assert packets.dns_addresses(dns_answer(query, "10.0.1.11"), 8) == []  # not ours
    assert packets.dns_addresses(b"\0" * 5, 7) == []


def test_dhcp_discover_and_offer() -> None:
    discover = packets.dhcp_discover(0xCAFE, "02:00:00:00:00:01")
    assert discover[0] == 1 and discover[28:34] == bytes.fromhex("020000000001")
    assert discover[236:240] == packets.DHCP_MAGIC
    offer = bytearray(discover)
    offer[0] = 2
    offer[16:20] = ipaddress.IPv4Address("10.0.1.200").packed
    offer[242] = packets.DHCP_OFFER
    assert packets.dhcp_offer(bytes(offer), 0xCAFE) == "10.0.1.200"
    assert packets.dhcp_offer(bytes(offer), 0xBEEF) is None
    assert packets.dhcp_offer(discover, 0xCAFE) is None  # our own broadcast


@pytest.mark.parametrize("value", ["198.51.100.1", "198.51.100.1:443"])
def test_targets(value: str) -> None:
    assert verify.target(value) == value


@pytest.mark.parametrize("value", ["", "example.org", "1.2.3.4:x", "1.2.3.4:70000", 5, None])
def test_bad_targets(value: object) -> None:
    with pytest.raises(InvalidInput):
        verify.target(value)


def test_defaults_per_model() -> None:
    assert [m for m in ("isolated", "routed", "nat", "bridged") if verify.enabled(m, None)] == [
        "routed",
        "nat",
    ]
    assert verify.enabled("isolated", True) and not verify.enabled("nat", False)


def test_the_agent_refuses_a_bad_spec() -> None:
    base = {
        "owner": "p/s/NetworkCheck/n",
        "model": "routed",
        "bridge": "br-in",
        "subnet": "10.0.1.0/24",
        "gateway": "10.0.1.254",
        "target": "198.51.100.1",
    }
    spec = VerifySpec.from_args(base)
    inside = spec.inside("kvq-x", "198.51.100.1")
    assert inside["address"] == "10.0.1.253" and inside["port"] is None
    assert VerifySpec.from_args({**base, "target": None}).target is None  # the host's gateway
    bad_name = {"dhcp_range": ["10.0.1.128", "10.0.1.253"], "dns_name": "g1.kvm.internal; x"}
    with pytest.raises(InvalidInput):
        VerifySpec.from_args({**base, **bad_name})
    for key, bad in (("bridge", "br in; rm"), ("model", "bridged"), ("target", "x;y")):
        with pytest.raises(InvalidInput):
            VerifySpec.from_args({**base, key: bad})


# --- the provider's side: the settings at preview, the check's inputs, the one line ---------


@pytest.fixture
def stack_config() -> Iterator[None]:
    yield
    pulumi.runtime.set_all_config({})


def checked(values: dict[str, object]) -> None:
    pulumi.runtime.set_all_config(
        {f"kvmnet:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    )
    check_stack_config(pulumi.Config("kvmnet"))


def test_the_settings_pass(stack_config: None) -> None:
    checked({"verify": False})
    checked({"model": "routed", "verifyTarget": "198.51.100.1:443"})
    checked({"model": "isolated", "verify": True})
    checked({"verifyOnRefresh": True})


@pytest.mark.parametrize(
    ("values", "line"),
    [
        ({"verify": 1}, "kvmnet:verify: must be true or false, got 1"),
        ({"verifyTarget": "example.org"}, "kvmnet:verifyTarget: must be ADDRESS or ADDRESS:PORT"),
        ({"verifyTarget": "198.51.100.1:0"}, "kvmnet:verifyTarget: must be between 1 and 65535"),
        (
            {"model": "bridged", "uplink": "eth0", "gateway": "10.0.1.1", "verify": True},
            "kvmnet:verify: a bridged network cannot be verified yet",
        ),
        ({"verifyOnRefresh": 1}, "kvmnet:verifyOnRefresh: must be true or false, got 1"),
        (
            {"model": "routed", "verify": False, "verifyOnRefresh": True},
            "kvmnet:verifyOnRefresh: needs the network verified (verify is off for this routed",
        ),
    ],
)
def test_bad_settings_name_the_key(
    stack_config: None, values: dict[str, object], line: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        checked(values)
    assert line in str(caught.value) and "\n" not in str(caught.value)


def test_the_resource_checks_its_inputs() -> None:
    provider = NetworkCheckProvider()
    props = {
        "connection": {"host": "h1"},
        "owner": "p/s/NetworkCheck/net-verify",
        "network": "net",
        "model": "nat",
        "bridge": "br-in",
        "subnet": "10.0.1.0/24",
        "target": "nowhere",
    }
    failures = {f.property: f.reason for f in provider.check({}, props).failures}
    assert failures == {"target": "target must be ADDRESS or ADDRESS:PORT (IPv4), got 'nowhere'"}
    props["target"] = "198.51.100.1"
    assert provider.check({}, props).failures == []


def test_a_failure_is_one_line_naming_host_network_check_rule_and_fix() -> None:
    props = {"network": "net", "model": "nat"}
    result = {
        "checks": [
            {"check": "gateway", "ok": True, "reason": "answered"},
            {"check": "outside", "ok": False, "reason": "expected an answer, got none (x)"},
        ],
        "blocked_by": "filter FORWARD rule '-A FORWARD -s 10.0.1.0/24 -j DROP' (iptables-legacy)",
    }
    line = failure_line("root@h1", result, props)
    assert line is not None and "\n" not in line
    assert line.startswith("root@h1: network net (nat): verify outside failed: expected an answer")
    assert "blocked by filter FORWARD rule '-A FORWARD -s 10.0.1.0/24 -j DROP'" in line
    assert line.endswith("fix: " + FIXES["blocked"])
    leak = {
        "checks": [
            {"check": "outside", "ok": False, "reason": "reached, but a routed network must not"},
            {"check": "dns", "ok": False, "reason": "z"},
        ]
    }
    line = failure_line("root@h1", leak, {"network": "net", "model": "routed"})
    assert line is not None and "failed (and 1 more)" in line and FIXES["outside-leak"] in line
    assert failure_line("root@h1", {"checks": result["checks"][:1]}, props) is None


def test_a_firewalld_refusal_names_its_zones_and_the_zone_to_put_the_bridge_in() -> None:
    props = {"network": "net", "model": "nat", "bridge": "br-in"}
    result = {
        "checks": [{"check": "dhcp", "ok": False, "reason": "expected an offer, got none"}],
        "blocked_by": "firewalld's zones (table inet firewalld rejects what the bridge's zone "
        "refuses)",
    }
    line = failure_line("root@h1", result, props)
    assert line is not None and "\n" not in line
    assert "blocked by firewalld's zones" in line
    assert (
        "fix: put the bridge in a firewalld zone that accepts it: firewall-cmd --permanent "
        "--zone=trusted --add-interface=br-in" in line
    )


def test_only_a_nat_to_routed_switch_skips_the_outside() -> None:
    assert skipped_on_switch({"model": "nat"}, {"model": "routed"}) == ("outside",)
    assert skipped_on_switch({"model": "routed"}, {"model": "nat"}) == ()
    assert skipped_on_switch({"model": "nat"}, {"model": "isolated"}) == ()


def test_a_gateway_that_drops_ping_but_answers_arp_is_on_the_bridge(tmp_path: Path) -> None:
    from kvmnet_provider.agent.verify import inside

    table = tmp_path / "arp"
    table.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "10.0.1.254       0x1         0x2         52:54:00:aa:bb:cc     *        kvq-0\n"
        "10.0.1.9         0x1         0x0         00:00:00:00:00:00     *        kvq-0\n"
    )
    assert inside.arp_resolved("10.0.1.254", str(table))
    assert not inside.arp_resolved("10.0.1.9", str(table))  # incomplete: nobody answered
    assert not inside.arp_resolved("10.0.1.1", str(table))
    assert not inside.arp_resolved("10.0.1.254", str(tmp_path / "none"))


def test_routed_lets_a_neighbour_in_and_nat_refuses_it() -> None:
    assert verify.inbound_checked("routed") and verify.inbound_checked("nat")
    assert not verify.inbound_checked("isolated")  # the host has no route in to try
    (routed,) = checks.judge("routed", seen(inbound=True))
    assert routed.ok
    (nat,) = checks.judge("nat", seen(inbound=False))
    assert nat.ok
    (leak,) = checks.judge("nat", seen(inbound=True))
    assert not leak.ok and "reached, but a nat network must not" in leak.reason
    (cut,) = checks.judge("routed", seen(inbound=False))
    assert not cut.ok and "expected an answer" in cut.reason


def test_the_outside_probe_has_its_own_names_and_a_free_link_local_net() -> None:
    host, peer = checks.outside_links("proj/stack/NetworkCheck/a")
    assert len(host) <= 15 and len(peer) <= 15
    assert host[4:] == peer[4:] == checks.probe_links("proj/stack/NetworkCheck/a")[0][4:]
    assert {host[:4], peer[:4]}.isdisjoint({checks.HOST_PREFIX, checks.PEER_PREFIX})
    net = checks.outside_link_net("proj/stack/NetworkCheck/a", [])
    assert net.prefixlen == 30 and net.subnet_of(
        ipaddress.IPv4Network("169.254.1.0/24").supernet(8)
    )
    assert not net.subnet_of(ipaddress.IPv4Network("169.254.0.0/24"))
    assert not net.subnet_of(ipaddress.IPv4Network("169.254.255.0/24"))
    assert checks.outside_link_net("proj/stack/NetworkCheck/a", []) == net  # stable
    # the host's own link-local users are avoided; a default route is not a clash
    busy = [str(net), "169.254.169.254/32", "0.0.0.0/0", "fe80::/64"]
    other = checks.outside_link_net("proj/stack/NetworkCheck/a", busy)
    assert other != net and not other.overlaps(net)
    with pytest.raises(ValueError, match="no free link-local"):
        checks.outside_link_net("x", ["169.254.0.0/16"])


FORWARD = {"protocol": "tcp", "host_port": 8080, "guest_address": "10.0.1.11", "guest_port": 80}


def tracked(reply_src: str, reply_sport: int, proto: str = "tcp", dport: int = 8080) -> dict:
    return {"protocol": proto, "dport": dport, "reply_src": reply_src, "reply_sport": reply_sport}


def test_a_forward_passes_when_conntrack_shows_it_translated() -> None:
    assert checks.judge_forwards([], []) is None
    good = checks.judge_forwards([FORWARD], [tracked("10.0.1.11", 80)])
    assert good is not None and good.ok and good.ran
    assert "tcp/8080 -> 10.0.1.11:80 translated" in good.reason
    # reached the host itself: the DNAT rule did not take it
    local = checks.judge_forwards([FORWARD], [tracked("169.254.7.1", 8080)])
    assert local is not None and not local.ok and "DNAT rule did not match" in local.reason
    # tracked for another port or protocol only: nothing of this forward got through
    for other in (tracked("10.0.1.11", 80, dport=8081), tracked("10.0.1.11", 80, proto="udp")):
        dropped = checks.judge_forwards([FORWARD], [other])
        assert dropped is not None and not dropped.ok and "FORWARD" in dropped.reason


def test_a_forward_from_one_interface_only_is_not_checked() -> None:
    uplink = {**FORWARD, "in_interface": "eth0"}
    (outcome) = checks.judge_forwards([uplink], [])
    assert outcome is not None and outcome.ok and not outcome.ran and "eth0" in outcome.reason
    both = checks.judge_forwards(
        [uplink, {**FORWARD, "host_port": 9090}], [tracked("10.0.1.11", 80, dport=9090)]
    )
    assert both is not None and both.ok and both.ran and "not checked" in both.reason


def test_forwards_are_checked_as_given() -> None:
    assert verify.forwards(None) == []
    (one,) = verify.forwards([{"host_port": 8080, "guest_address": "10.0.1.11", "guest_port": 80}])
    assert one == {**FORWARD, "in_interface": None}
    for bad in ("x", [1], [{**FORWARD, "protocol": "icmp"}], [{**FORWARD, "host_port": 0}]):
        with pytest.raises(InvalidInput):
            verify.forwards(bad)


def test_a_leak_names_kvmnets_rule_problem_and_the_leak_fix() -> None:
    props = {"network": "net", "model": "nat"}
    result = {
        "checks": [
            {"check": "inbound", "ok": False, "reason": "reached, but a nat network must not (x)"}
        ],
        "blocked_by": "the jump to KVMNET-FWD is missing from filter FORWARD (kvmnet's refusal "
        "does not run)",
    }
    line = failure_line("h", result, props)
    assert line is not None and "verify inbound failed" in line
    assert "blocked by" not in line and "jump to KVMNET-FWD is missing" in line
    assert FIXES["inbound-leak"] in line


def test_a_leak_through_a_foreign_accept_names_it_and_the_fix() -> None:
    props = {"network": "net", "model": "nat"}
    result = {
        "checks": [
            {"check": "inbound", "ok": False, "reason": "reached, but a nat network must not"}
        ],
        "blocked_by": "let in by filter FORWARD rule '-A FORWARD -j ACCEPT' (iptables-legacy)",
    }
    line = failure_line("h", result, props)
    assert line is not None and "must not; let in by filter FORWARD rule" in line
    assert FIXES["blocked"] in line


def test_a_probe_is_found_by_its_name_on_its_own_host_only(tmp_path: Path) -> None:
    """Hosts that share a PID namespace (a lab of namespaces) may run probes of one name."""
    (tmp_path / "idle_probe.py").write_text("import time\ndef main():\n    time.sleep(60)\n")

    def run(namespace: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-I", "-S", "-c", spawn.BOOT, json.dumps([str(tmp_path)])]
        return subprocess.Popen([*argv, "idle_probe", "kvp-test-probe", namespace])

    ours, theirs = run(spawn.home_namespace()), run("1")
    try:
        deadline = time.monotonic() + 10
        while not spawn.processes("kvp-test-probe") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spawn.processes("kvp-test-probe") == [ours.pid]
        assert spawn.processes("kvp-other") == []
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()


def test_the_dhcp_offer_is_awaited_beside_the_other_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dnsmasq holds a new client's offer while it pings the address: the gateway, outside and
    DNS checks run meanwhile, and a DHCP check that fails with an OSError is a miss."""
    import threading

    from kvmnet_provider.agent.verify import inside

    offered = threading.Event()
    order: list[str] = []

    def slow_dhcp(peer: str, mac: str) -> dict[str, object]:
        offered.wait(5)
        order.append("dhcp")
        return {"reached": True, "detail": "offered 10.0.1.50"}

    def fast(name: str) -> object:
        def check(*_: object) -> dict[str, object]:
            order.append(name)
            if name == "dns":
                offered.set()  # the offer comes only after every other check ran
            return {"reached": True, "detail": name}

        return check

    monkeypatch.setattr(inside, "dhcp", slow_dhcp)
    for name in ("gateway", "ping", "dns"):
        monkeypatch.setattr(inside, name, fast(name))
    spec = {"dhcp": True, "peer": "kvq-0", "mac": "02:00:00:00:00:01", "gateway": "10.0.1.254",
            "target": "192.0.2.1", "port": None, "dns_name": "g1", "dns_address": None}  # fmt: skip
    seen = inside.run_checks(spec)
    assert order == ["gateway", "ping", "dns", "dhcp"]
    assert seen["dhcp"]["reached"] and set(seen) == {"dhcp", "gateway", "outside", "dns"}

    def broken(peer: str, mac: str) -> dict[str, object]:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(inside, "dhcp", broken)
    seen = inside.run_checks({**spec, "gateway": None, "target": None, "dns_name": None})
    assert seen == {"dhcp": {"reached": False, "detail": "broken: Address already in use"}}


class ScriptedAgent:
    """network.verify answers from a list, in turn; every call kept."""

    def __init__(self, *results: dict[str, object]) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, dict[str, object]]] = []

    def call(self, op: str, args: dict[str, object], timeout: float = 0) -> dict[str, object]:
        self.calls.append((op, args))
        return self.results.pop(0)


def test_a_refresh_probes_again_only_when_asked_and_a_failure_is_drift() -> None:
    provider = NetworkCheckProvider()
    props = {"connection": {"host": "root@h1"}, "owner": "p/s/NetworkCheck/net-verify",
             "network": "net", "model": "nat", "bridge": "br-in", "subnet": "10.0.1.0/24",
             "passed": ["gateway"], "checks": [], "checked_at": "then",
             "watch": {"guests": ["g1"]}}  # fmt: skip
    quiet = ScriptedAgent()
    assert provider.host_read(quiet, props)["checked_at"] == "then"  # type: ignore[arg-type,index]
    assert quiet.calls == []  # the last result, no probe

    good = {"checks": [{"check": "gateway", "ok": True, "reason": "answered"}], "target": "x"}
    bad = {"checks": [{"check": "gateway", "ok": False, "reason": "expected an answer, got "
                       "none (no answer)"}], "target": "x"}  # fmt: skip
    agent = ScriptedAgent(good, bad)
    asked = {**props, "on_refresh": True}
    passed = provider.host_read(agent, asked)  # type: ignore[arg-type]
    assert passed is not None and passed["failing"] is None and passed["passed"] == ["gateway"]
    assert "on_refresh" not in agent.calls[0][1] and "watch" not in agent.calls[0][1]
    failed = provider.host_read(agent, asked)  # type: ignore[arg-type]
    assert failed is not None and failed["passed"] == []
    assert failed["failing"].startswith("root@h1: network net (nat): verify gateway failed")
    assert failed["watch"]["guests"] == ["g1"] and failed["watch"] != props["watch"]  # up: again
