"""The firewall backend `auto` resolves to, per filter hook, and where the rules of a state
that recorded one backend (or both) go: the probes of the host are stubbed."""

from __future__ import annotations

from typing import Any

import pytest

from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.agent.firewall import backend, both
from kvmnet_provider.spec.firewall import left_behind, sides

LEGACY_DROP = "legacy iptables filter FORWARD"
NFT_DROP = "nftables table ip filter chain FORWARD"


@pytest.fixture()
def host(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call with the host's DROPs and tables; backends load as name-tagged stand-ins."""

    def setup(legacy: bool, nft: bool, foreign_table: bool, legacy_rules: bool = False) -> None:
        monkeypatch.setattr(backend, "legacy_drop", lambda hook: LEGACY_DROP if legacy else None)
        monkeypatch.setattr(backend, "nft_drop", lambda hook: NFT_DROP if nft else None)
        tables = [("ip", "nat")] if foreign_table else []
        monkeypatch.setattr(backend, "_nft_tables", lambda: tables)
        monkeypatch.setattr(backend, "_legacy_in_use", lambda: legacy_rules or legacy)
        monkeypatch.setattr(backend, "_iptables_is_nft", lambda: False)
        monkeypatch.setattr(backend, "load", lambda name: type(name, (), {"NAME": name}))
        backend._detected.cache_clear()

    return setup


CHOICES = [  # legacy DROP, nft DROP, foreign nft table -> forward/input, NAT
    (False, False, False, "iptables", "iptables"),
    (False, False, True, "nftables", "nftables"),
    (True, False, False, "iptables", "iptables"),
    (True, False, True, "iptables", "iptables"),  # the host of the report
    (False, True, True, "nftables", "nftables"),
    (True, True, True, "both", "nftables"),  # NAT stays with the host's own tables
]


@pytest.mark.parametrize("legacy, nft, table, filter_choice, nat_choice", CHOICES)
def test_auto_follows_the_drop(
    host: Any, legacy: bool, nft: bool, table: bool, filter_choice: str, nat_choice: str
) -> None:
    host(legacy, nft, table)
    assert backend.detect("forward")[0] == filter_choice
    for op in ("forward_ensure", "forward_read", "input_ensure", "input_remove"):
        chosen = backend.choose({"backend": "auto"}, op)
        assert (both if filter_choice == "both" else chosen) is chosen
        assert chosen.NAME == filter_choice
    for op in ("masquerade_ensure", "dnat_ensure", "masquerade_remove"):
        assert backend.choose({}, op).NAME == nat_choice


@pytest.mark.parametrize("setting", ["iptables", "nftables"])
def test_an_explicit_setting_is_kept(host: Any, setting: str) -> None:
    host(True, True, True)
    assert backend.choose({"backend": setting}, "forward_ensure").NAME == setting


def test_a_recorded_both_reads_both_and_nat_goes_to_one(host: Any) -> None:
    host(False, False, True)  # the DROPs are gone since: the record still says where
    assert backend.choose({"backend": "both"}, "forward_read") is both
    assert backend.choose({"backend": "both"}, "masquerade_read").NAME == "nftables"


def test_an_unknown_backend_is_refused(host: Any) -> None:
    host(False, False, False)
    with pytest.raises(Exception, match="backend must be one of"):
        backend.choose({"backend": "pf"}, "forward_read")


@pytest.mark.parametrize("requested", ["iptables", "auto"])
def test_the_hint_never_proposes_the_setting_in_use(
    monkeypatch: pytest.MonkeyPatch, requested: str
) -> None:
    monkeypatch.setattr(backend, "other_backend_drop", lambda name: NFT_DROP)
    with pytest.raises(AgentError) as failed:
        chosen: Any = type("b", (), {"NAME": "iptables"})
        backend._check_other_backend(chosen, requested)
    text = str(failed.value)
    assert "policy DROP" in text
    assert f"firewall_backend to {requested}" not in text
    assert "firewall_backend to nftables" not in text  # that would lose the legacy accepts


def test_both_merges_and_reports_a_lost_side(monkeypatch: pytest.MonkeyPatch) -> None:
    def side(name: str, count: int, problems: list[str]) -> Any:
        answer = {"backend": name, "sections": {"cross": []}, "count": count,
                  "jump": "FORWARD" if count else None, "problems": problems}  # fmt: skip
        ops = {
            "forward_read": staticmethod(lambda *a: dict(answer)),
            "forward_remove": staticmethod(lambda *a: {"removed": count}),
        }
        return type(name, (), ops)

    sides_now = [side("iptables", 3, []), side("nftables", 0, [])]
    monkeypatch.setattr(both, "_sides", lambda: sides_now)
    read = both.forward_read("o")
    assert read["backend"] == "both" and read["count"] == 3
    assert read["problems"] == ["nftables: kvmnet's rules are missing"]
    assert both.forward_remove("o") == {"removed": 3}
    sides_now[:] = [side("iptables", 0, []), side("nftables", 0, [])]
    assert both.forward_read("o")["count"] == 0 and not both.forward_read("o")["problems"]


@pytest.mark.parametrize(
    "old, new, stale",
    [
        ("iptables", "iptables", None),
        ("iptables", "nftables", "iptables"),
        ("both", "nftables", "iptables"),
        ("iptables", "both", None),
        ("both", "both", None),
    ],
)
def test_what_an_update_leaves_behind(old: str, new: str, stale: str | None) -> None:
    assert left_behind(old, new) == stale
    assert sides("both") == {"iptables", "nftables"}


@pytest.mark.parametrize(
    "legacy_hooks, nft_hooks, input_choice",
    [
        ({"forward"}, set(), "iptables"),  # no DROP at input: with the network's forward rules
        ({"forward"}, {"input"}, "nftables"),  # a DROP at input: there
        ({"forward", "input"}, {"forward", "input"}, "both"),
        ({"forward"}, {"forward"}, "nftables"),  # both drop at forward only: one backend
    ],
)
def test_the_input_accepts_follow_the_input_drop_else_the_forward_pick(
    monkeypatch: pytest.MonkeyPatch,
    host: Any,
    legacy_hooks: set[str],
    nft_hooks: set[str],
    input_choice: str,
) -> None:
    host(False, False, True)
    monkeypatch.setattr(backend, "legacy_drop", lambda hook: hook in legacy_hooks or None)
    monkeypatch.setattr(backend, "nft_drop", lambda hook: hook in nft_hooks or None)
    assert backend.choose({}, "input_ensure").NAME == input_choice
