"""`kvmnet-picture` against a real stack: the stack program's NAT model (two guests, a port
forward) brought up on a lab host by the real engine, drawn with live reads from the stack's
working directory (`pulumi stack export` there): no drift while all is as the state says;
then one guest's QEMU killed behind kvmnet's back (its PID from the stack's outputs), and
the drawing marks that guest, and only it, gone. Destroy leaves the host as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.picture import draw_live, kill_and_wait, read_svg
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack, config_stack

pytestmark = pytest.mark.e2e


@pytest.fixture()
def nat_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    config = lab_stack_config(lab, model="nat", image_dir=guest_image_dir())
    config.update({
        "kvmnet:accelerator": "tcg",
        "kvmnet:portForwards": [{"guest": "g1", "host_port": 8080, "guest_port": 80}],
    })  # fmt: skip
    with config_stack(tmp_path, "pic", config) as stack:
        yield stack


def test_picture_of_a_live_stack_marks_a_killed_guest(
    nat_stack: TestStack, lab: LabStatus, lab_api: Lab, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    before = host_snapshot(lab_api, host.namespace)
    nat_stack.up()
    outputs = nat_stack.outputs()
    bridge, guests = outputs["bridge"], outputs["guests"]

    clean = draw_live(nat_stack, tmp_path / "clean.svg")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    drawing = read_svg(tmp_path / "clean.svg")
    assert drawing.drifted == [], drawing.drifted
    for name in (host.address, bridge, *(f"guest {g}" for g in guests)):
        assert name in drawing.text, name
    assert "live reads: 0 drifted, 0 hosts not read" in drawing.text
    assert "forward tcp host:8080 -> 10.0.1.11:80" in drawing.text

    kill_and_wait(int(guests["g1"]["pid"]))  # a guest of this test's stack, on its lab host

    found = draw_live(nat_stack, tmp_path / "drift.svg")
    assert found.returncode == 2, found.stdout + found.stderr
    drawing = read_svg(tmp_path / "drift.svg")
    (drifted,) = drawing.drifted
    assert "guest g1" in drifted and "✗ gone" in drifted, drawing.drifted
    assert "guest g2" in drawing.text and bridge in drawing.text

    tree = draw_live(nat_stack, tmp_path / "drift.txt", "--format", "text")
    assert tree.returncode == 2, tree.stderr
    lines = (tmp_path / "drift.txt").read_text().splitlines()
    assert [line for line in lines if "guest g1 " in line][0].endswith("!! DRIFT: gone")
    assert not [line for line in lines if "guest g2 " in line and "DRIFT" in line]

    nat_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []
