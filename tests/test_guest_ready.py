"""A guest's readiness and addresses without a host: the rules, the wait loop with a stub
clock and agent, the failure line, the agent's reading of dnsmasq's files and console logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from kvmnet_provider.agent.guests import ready as agent_ready
from kvmnet_provider.errors import KvmnetError
from kvmnet_provider.program.guest_disks import guest_ready
from kvmnet_provider.resources.guest import QemuGuestProvider
from kvmnet_provider.resources.guest_ready import (
    POLL_SECONDS,
    PROGRESS_SECONDS,
    GuestReady,
    Progress,
    progress,
    ready_prop,
    wait_ready,
    with_address,
)
from kvmnet_provider.spec.ready import readiness
from kvmnet_provider.spec.validate import InvalidInput

CONN = {"host": "198.18.0.10", "known_hosts": "/tmp/kh", "private_key_path": "/tmp/id"}
GUEST = {
    "owner": "proj/dev/QemuGuest/g1",
    "name": "g1",
    "kernel": "/img/vmlinuz",
    "nics": [{"tap": "vif1.0", "mac": "52:54:00:aa:00:01"}],
    "accelerator": "tcg",
}


# --- the rules ------------------------------------------------------------------------------
def test_readiness_normalises_and_defaults() -> None:
    assert readiness({"lease": True}) == {
        "lease": True, "tcp": None, "console": None, "timeout": 300, "address": None,
    }  # fmt: skip
    got = readiness({"tcp": 22.0, "console": "finished at", "timeout": 60, "address": "10.0.1.5"})
    assert got["tcp"] == 22 and got["timeout"] == 60 and got["address"] == "10.0.1.5"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ({"tcp": 0}, ".tcp must be between 1 and 65535"),
        ({"tcp": 70000}, ".tcp must be between 1 and 65535"),
        ({"console": "(unclosed"}, ".console is not a valid regular expression"),
        ({"console": ""}, ".console must be a regular expression"),
        ({"lease": True, "timeout": 0}, ".timeout must be between 1 and 3600"),
        ({"lease": True, "timeout": 7200}, ".timeout must be between 1 and 3600"),
        ({"ping": True}, ".ping is not a kind of readiness"),
        ({"timeout": 30}, "must ask for at least one of lease, tcp, console"),
        ({"lease": "yes"}, ".lease must be true or false"),
        ({"tcp": 22, "address": "10.0.1"}, ".address must be an IPv4 address"),
        ("lease", "must be an object"),
    ],
)
def test_bad_readiness_is_refused_naming_the_rule(value: Any, said: str) -> None:
    with pytest.raises(InvalidInput, match=said.replace("(", r"\(")):
        readiness(value)


def test_check_names_the_property_at_preview() -> None:
    provider = QemuGuestProvider()
    result = provider.check({}, {"connection": CONN, **GUEST, "ready": {"tcp": 0}})
    assert [(f.property, f.reason) for f in result.failures] == [
        ("ready", "ready.tcp must be between 1 and 65535, got 0")
    ]
    result = provider.check({}, {"connection": CONN, **GUEST, "ready": {"kind": "x"}})
    assert result.failures[0].reason.startswith("ready.kind is not a kind of readiness")
    ok = provider.check({}, {"connection": CONN, **GUEST, "ready": {"lease": True}})
    assert not ok.failures and ok.inputs["ready"]["timeout"] == 300


def test_stack_config_names_the_key() -> None:
    from kvmnet_provider.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        guest_ready({"ready": {"console": "("}}, "kvmnet:guests[0]")
    assert "kvmnet:guests[0].ready.console" in str(caught.value)
    assert guest_ready({}, "k") is None
    assert guest_ready({"ready": {"lease": True}}, "k") == readiness({"lease": True})


def test_old_state_without_ready_shows_no_diff() -> None:
    """A stack made before `ready` existed: its state has no such key, the new inputs None."""
    provider = QemuGuestProvider()
    news = provider.check({}, {"connection": CONN, **GUEST}).inputs
    assert news["ready"] is None
    olds = {k: v for k, v in provider._outputs(news, {"pid": 1}).items() if k != "ready"}
    assert not provider.diff("id", olds, news).changes
    # asking for readiness later is an update, never a replacement
    asked = provider.check({}, {"connection": CONN, **GUEST, "ready": {"lease": True}}).inputs
    d = provider.diff("id", olds, asked)
    assert d.changes and not d.replaces
    # the agent's start never sees it
    assert "ready" not in provider.spec(asked)


def test_ready_props_and_the_declared_address() -> None:
    assert ready_prop(GuestReady(tcp=22)) == {"lease": False, "tcp": 22, "timeout": 300}
    assert with_address(GuestReady(tcp=22), "10.0.1.5") == {
        "lease": False, "tcp": 22, "timeout": 300, "address": "10.0.1.5",
    }  # fmt: skip
    assert with_address({"lease": True}, "10.0.1.5") == {"lease": True}  # no tcp: as is
    assert with_address(None, "10.0.1.5") is None


# --- the wait loop ----------------------------------------------------------------------------
class Stub:
    """An agent answering guest.probe from a script of answers, and a clock it advances."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.now = 1000.0
        self.calls: list[dict[str, Any]] = []
        self.said: list[str] = []
        self.tell: Progress | None = None

    def probe(self, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(args)
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return {"running": True, "addresses": [], "leased": [], "last_line": "", **answer}

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 2.0
        self.now += seconds

    def wait(self, ready: dict[str, Any]) -> dict[str, Any]:
        props = {"name": "g1", "owner": "o", "connection": {"host": "h1"}}
        return wait_ready(
            self.probe, props, readiness(ready),
            clock=lambda: self.now, sleep=self.sleep,
            tell=self.tell or Progress(self.said.append, PROGRESS_SECONDS, PROGRESS_SECONDS),
        )  # fmt: skip


def test_the_wait_returns_once_every_part_holds() -> None:
    stub = Stub(
        [
            {"last_line": "booting"},
            {"leased": ["10.0.1.130"], "addresses": ["10.0.1.130"]},
            {"leased": ["10.0.1.130"], "addresses": ["10.0.1.130"], "console": True},
        ]
    )
    seen = stub.wait({"lease": True, "console": "READY"})
    assert seen["addresses"] == ["10.0.1.130"] and len(stub.calls) == 3
    assert stub.calls[0] == {
        "name": "g1", "owner": "o", "tcp": None, "console": "READY", "address": None,
    }  # fmt: skip


def test_the_wait_says_what_it_waits_for_while_it_waits() -> None:
    stub = Stub([{"last_line": "x"}] * 20 + [{"tcp": True}])
    stub.wait({"tcp": 22})
    assert stub.said and all(s.startswith("guest g1: waiting for tcp port 22") for s in stub.said)
    assert len(stub.said) == int(40 // PROGRESS_SECONDS)  # one word per period, not per probe


def test_a_status_is_said_at_once_and_again_when_what_is_missing_changes() -> None:
    leased = {"leased": ["10.0.1.130"]}
    stub = Stub([{}] * 3 + [leased] * 3 + [{**leased, "console": True}])
    stub.tell = Progress(stub.said.append, 0.0, PROGRESS_SECONDS)
    stub.wait({"lease": True, "console": "READY"})
    assert stub.said == [
        "guest g1: waiting for a DHCP lease, console /READY/ (0 s of 300 s)",
        f"guest g1: waiting for console /READY/ ({int(3 * POLL_SECONDS)} s of 300 s)",
    ]


def test_outside_the_provider_server_progress_is_a_log_line_now_and_then() -> None:
    tell = progress()
    assert tell.say is pulumi.log.info and tell.first == tell.every == PROGRESS_SECONDS


def test_past_the_timeout_it_fails_in_one_line() -> None:
    stub = Stub([{"tcp": False, "tcp_address": "10.0.1.11", "last_line": "KVMNET-GUEST-READY g1"}])
    with pytest.raises(KvmnetError) as caught:
        stub.wait({"tcp": 2222, "timeout": 5})
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith("guest g1 on h1 was not ready within 5 s: waited for tcp port 2222")
    assert "missing tcp port 2222 on 10.0.1.11" in line
    assert "last console line: 'KVMNET-GUEST-READY g1'" in line
    assert stub.now - 1000.0 == pytest.approx(5.0)  # never slept past the deadline


def test_a_guest_that_stops_while_waited_for_fails_at_once() -> None:
    stub = Stub([{"running": False, "last_line": "Kernel panic"}])
    with pytest.raises(KvmnetError, match="guest g1 on h1 stopped while `up` waited for a DHCP"):
        stub.wait({"lease": True})
    assert len(stub.calls) == 1


# --- the agent's probe ---------------------------------------------------------------------------
def test_leases_and_reservations_by_mac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "ns" / "dhcp" / "br-in"
    run_dir.mkdir(parents=True)
    files = tmp_path / "files" / "br-in"
    files.mkdir(parents=True)
    (run_dir / "leases").write_text(
        "2000 52:54:00:aa:00:01 10.0.1.130 g1 *\n"
        "500 52:54:00:aa:00:01 10.0.1.131 g1 *\n"  # expired
        "0 52:54:00:aa:00:02 10.0.1.132 * *\n"  # forever, another guest
    )
    (files / "dhcp-hosts").write_text("52:54:00:AA:00:01,10.0.1.11,g1\n52:54:00:aa:00:03,g3\n")
    monkeypatch.setattr(agent_ready.hoststate, "namespace_dir", lambda: tmp_path / "ns")
    monkeypatch.setattr(
        agent_ready.account, "files_dir", lambda bridge: tmp_path / "files" / bridge
    )
    macs = {"52:54:00:aa:00:01"}
    assert agent_ready.leases(macs, now=1000) == ["10.0.1.130"]
    assert agent_ready.leases({"52:54:00:aa:00:02"}, now=1000) == ["10.0.1.132"]
    assert agent_ready.reservations(macs) == ["10.0.1.11"]
    assert agent_ready.reservations({"52:54:00:aa:00:03"}) == []  # a name, no address


def test_the_console_log_last_line_and_pattern(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"boot\r\n\x1b[32mCloud-init v. 24 finished at now\x1b[0m\r\n\r\n")
    text = agent_ready._console_text(log)
    assert agent_ready.last_line(text) == "Cloud-init v. 24 finished at now"
    assert agent_ready.last_line("") == ""
    assert agent_ready._console_text(tmp_path / "absent") == ""


def test_the_provider_waits_on_ready_as_the_engine_stores_it() -> None:
    """The engine drops a dict's null keys: `ready` comes back without tcp, console, address."""

    class Agent:
        calls: list[tuple[str, dict[str, Any]]] = []

        def call(self, op: str, args: dict[str, Any], timeout: float = 0) -> Any:
            self.calls.append((op, args))
            return {"running": True, "addresses": ["10.0.1.130"], "leased": ["10.0.1.130"]}

    agent = Agent()
    props = {**GUEST, "connection": CONN, "ready": {"lease": True, "timeout": 30}}
    live = QemuGuestProvider()._probed(agent, props, {"pid": 1})  # type: ignore[arg-type]
    assert live == {"pid": 1, "addresses": ["10.0.1.130"]}
    assert agent.calls == [
        ("guest.probe", {"name": "g1", "owner": GUEST["owner"], "tcp": None, "console": None,
                         "address": None}),
    ]  # fmt: skip


def test_stack_config_ready_reaches_the_guest_with_its_declared_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one-host and fleet programs read a guest's `ready`; tcp goes to its address."""
    import json

    import pulumi

    from kvmnet_provider.program.checks import check_guests
    from kvmnet_provider.program.guests import guest_specs

    monkeypatch.setattr(pulumi, "get_project", lambda: "kvmnet")
    monkeypatch.setattr(pulumi, "get_stack", lambda: "dev")
    pulumi.runtime.set_all_config({"kvmnet:guestImage": json.dumps({"kernel": "/k"})})
    try:
        raw = [{"name": "g1", "address": "10.0.1.11", "ready": {"tcp": 22, "timeout": 60}}]
        assert check_guests(raw, "kvmnet:guests") == ["g1"]
        (spec,) = guest_specs(raw, pulumi.Config("kvmnet"), "10.0.1.0/24", "10.0.1.254")
        assert spec.ready == readiness({"tcp": 22, "timeout": 60})
        assert with_address(spec.ready, spec.address)["address"] == "10.0.1.11"  # type: ignore[index]
        from kvmnet_provider.errors import ConfigError

        with pytest.raises(ConfigError, match=r"kvmnet:guests\[0\]\.ready\.timeout"):
            check_guests([{"name": "g1", "ready": {"lease": True, "timeout": -1}}], "kvmnet:guests")
    finally:
        pulumi.runtime.set_all_config({})
