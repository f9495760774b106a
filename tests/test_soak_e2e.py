"""A short fault soak (real engine, lab host, test guests): the tap and the bridge deleted
behind kvmnet's back first (the two repairs that once reported success and left the guests
cut off), then random faults for about two minutes; every cycle's refresh + up converges
(no change left, the NAT row from inside both guests at once), and the destroy at the end
leaves the host as before. `make soak` runs the same for longer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.soak import run_soak

pytestmark = pytest.mark.e2e


def test_short_fault_soak_converges_every_cycle(
    tmp_path: Path, lab: LabStatus, lab_api: Lab
) -> None:
    seconds = float(os.environ.get("KVMNET_SOAK_SECONDS", "120"))
    report = run_soak(
        lab_api, lab, tmp_path, seconds, seed=22, first=("tap-deleted", "bridge-deleted")
    )
    print(report.summary())  # shown with -rP
    assert report.cycles >= 2, report.summary()
    assert report.converged["tap-deleted"] >= 1 and report.converged["bridge-deleted"] >= 1
    assert report.ok, report.summary()
