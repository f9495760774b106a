"""Each model's rules, in both backends' text, against the checked-in expectation (as libvirt's
networkxml2firewalldata does): a rule change shows up here as a diff to review."""

from __future__ import annotations

import os

import pytest
from firewall_text import GOLDEN_DIR, MODELS, iptables_text, nft_text


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_rules_match_the_golden(monkeypatch: pytest.MonkeyPatch, model: str, backend: str) -> None:
    render = nft_text if backend == "nftables" else iptables_text
    got = render(monkeypatch, model)
    path = GOLDEN_DIR / f"{model}.{backend}"
    if os.environ.get("KVMNET_WRITE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()


def test_nat_masquerades_like_libvirt(monkeypatch: pytest.MonkeyPatch) -> None:
    """RETURN for local multicast and broadcast, tcp and udp to ports 1024-65535, then the rest."""
    nat = [ln for ln in iptables_text(monkeypatch, "nat").splitlines() if "POSTROUTING" in ln]
    assert [ln.split(" -m comment")[0] for ln in nat] == [
        "-A POSTROUTING -s 10.0.1.0/24 -d 224.0.0.0/24 -o eth0",
        "-A POSTROUTING -s 10.0.1.0/24 -d 255.255.255.255/32 -o eth0",
        "-A POSTROUTING -s 10.0.1.0/24 ! -d 10.0.1.0/24 -o eth0 -p tcp",
        "-A POSTROUTING -s 10.0.1.0/24 ! -d 10.0.1.0/24 -o eth0 -p udp",
        "-A POSTROUTING -s 10.0.1.0/24 ! -d 10.0.1.0/24 -o eth0",
    ]
    assert [ln.split("-j ")[1] for ln in nat] == [
        "RETURN", "RETURN", "MASQUERADE --to-ports 1024-65535",
        "MASQUERADE --to-ports 1024-65535", "MASQUERADE",
    ]  # fmt: skip
