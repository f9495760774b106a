"""firewall_backend auto follows the host's DROP: a legacy FORWARD DROP on a host that also has
an nftables table of its own (a foreign NAT rule made with iptables-nft) gets kvmnet's rules
in the legacy tables; a DROP in both gets kvmnet's accepts in both, and destroy leaves both
as they were.

Real engine, lab host over SSH, real guests; the host's firewall is read inside its namespace
with `iptables-legacy-save`, `iptables-nft-save` and `nft -j list ruleset`."""

from __future__ import annotations

from typing import Any

import pytest
import test_firewall_e2e
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.probe import EXPECTED
from kvmnet_lab.testing.snapshot import run_in
from kvmnet_lab.testing.stack import TestStack
from test_firewall_e2e import (
    FOREIGN_NAT,
    LEGACY,
    NFT,
    assert_same,
    forget_flows,
    legacy_filter,
    nft_filter,
    snapshot,
    state_backend,
    undo_host,
)
from test_models_e2e import observe_model

pytestmark = pytest.mark.e2e
host_firewall = test_firewall_e2e.host_firewall  # the fixtures, shared
model_stack = test_firewall_e2e.model_stack

JUMP = "-m comment --comment kvmnet -j KVMNET_FWD"


def network_proved(stack: TestStack, lab: LabStatus, model: str) -> None:
    """The network's own check passed, the outside included, and the guests see the row."""
    (check,) = stack.resources("NetworkCheck")
    checks = check["outputs"]["checks"]
    assert "outside" in check["outputs"]["passed"], checks
    assert all(c.get("ok") for c in checks), checks
    assert observe_model(stack, lab, "10.0.1.254") == EXPECTED[model]


@pytest.mark.parametrize("model", ["routed", "nat"])
def test_a_legacy_drop_beside_a_foreign_nft_table_gets_the_legacy_backend(
    model: str, model_stack: TestStack, host_firewall: Any, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    host_firewall(LEGACY, False)  # FORWARD policy DROP in the legacy tables
    try:  # ... and a NAT rule of the host's own in nftables (its only nftables table)
        run_in(lab_api, ns, [NFT, "-t", "nat", "-A", "POSTROUTING", *FOREIGN_NAT])
        forget_flows(lab_api, ns)
        before = snapshot(lab_api, ns)
        model_stack.config("kvmnet:model", model)
        model_stack.up()

        assert state_backend(model_stack) == "iptables"
        assert f"-A FORWARD {JUMP}" in legacy_filter(lab_api, ns)
        assert "KVMNET" not in run_in(lab_api, ns, ["nft", "list", "ruleset"])
        network_proved(model_stack, lab, model)
        model_stack.preview_no_changes()
        model_stack.destroy()
        assert_same(before, snapshot(lab_api, ns))
    finally:
        undo_host(lab_api, ns, NFT)


def test_a_drop_in_both_gets_the_accepts_in_both(
    model_stack: TestStack, host_firewall: Any, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    host_firewall(LEGACY, False)
    host_firewall(NFT, False)
    forget_flows(lab_api, ns)
    before = snapshot(lab_api, ns)
    model_stack.config("kvmnet:model", "nat")
    model_stack.up()

    assert state_backend(model_stack) == "both"
    assert f"-A FORWARD {JUMP}" in legacy_filter(lab_api, ns)
    assert f"-A FORWARD {JUMP}" in nft_filter(lab_api, ns)
    (masquerade,) = model_stack.resources("MasqueradeRule")
    assert masquerade["outputs"]["backend"] == "nftables"  # NAT stays in one backend
    network_proved(model_stack, lab, "nat")
    model_stack.preview_no_changes()

    # One side loses its jump (a reload of the legacy tables): drift; up puts it back.
    run_in(lab_api, ns, [LEGACY, "-D", "FORWARD", *JUMP.split()])
    refresh = model_stack.refresh()
    assert "net-forward-rules" in refresh.stdout, refresh.stdout
    model_stack.up()
    assert f"-A FORWARD {JUMP}" in legacy_filter(lab_api, ns)
    model_stack.preview_no_changes()

    model_stack.destroy()
    assert_same(before, snapshot(lab_api, ns))
