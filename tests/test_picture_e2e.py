"""`kvmnet-picture` against a real stack: the stack program's NAT model (two guests, a port
forward) brought up on a lab host by the real engine, drawn with live reads from the stack's
working directory (`pulumi stack export` there): no drift while all is as the state says;
then one guest's QEMU killed behind kvmnet's back (its PID from the stack's outputs), and
the drawing marks that guest, and only it, gone. Destroy leaves the host as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack, config_stack

pytestmark = pytest.mark.e2e

SVG = "{http://www.w3.org/2000/svg}"
PICTURE = Path(sys.executable).parent / "kvmnet-picture"


@pytest.fixture()
def nat_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    config = lab_stack_config(lab, model="nat", image_dir=guest_image_dir())
    config.update({
        "kvmnet:accelerator": "tcg",
        "kvmnet:portForwards": [{"guest": "g1", "host_port": 8080, "guest_port": 80}],
    })  # fmt: skip
    with config_stack(tmp_path, "pic", config) as stack:
        yield stack


def picture(stack: TestStack, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it in the stack's project, with live reads."""
    argv = [str(PICTURE), "--cwd", str(stack.dir), "--stack", stack.stack, "--live", *extra]
    return subprocess.run(
        [*argv, "-o", str(out)], env=stack.ws.env(), capture_output=True, text=True, timeout=180
    )


def drawn(svg: Path) -> tuple[str, list[str]]:
    """All the SVG's text, and the text of each group it marks as drifted."""
    root = ET.parse(svg).getroot()
    drifted = [
        "".join(g.itertext())
        for g in root.iter(f"{SVG}g")
        if "drift" in (g.get("class") or "").split()
    ]
    return "".join(root.itertext()), drifted


def wait_gone(pid: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            return
        if state == "Z":  # killed; its reaper (the lab host's init) has yet to collect it
            return
        time.sleep(0.2)
    raise AssertionError(f"QEMU {pid} still runs {seconds} s after SIGKILL")


def test_picture_of_a_live_stack_marks_a_killed_guest(
    nat_stack: TestStack, lab: LabStatus, lab_api: Lab, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    before = host_snapshot(lab_api, host.namespace)
    nat_stack.up()
    outputs = nat_stack.outputs()
    bridge, guests = outputs["bridge"], outputs["guests"]

    clean = picture(nat_stack, tmp_path / "clean.svg")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    text, drifted = drawn(tmp_path / "clean.svg")
    assert drifted == [], drifted
    for name in (host.address, bridge, *(f"guest {g}" for g in guests)):
        assert name in text, name
    assert "live reads: 0 drifted, 0 hosts not read" in text
    assert "forward tcp host:8080 -> 10.0.1.11:80" in text

    pid = int(guests["g1"]["pid"])
    os.kill(pid, signal.SIGKILL)  # a guest of this test's stack on this test's lab host
    wait_gone(pid)

    found = picture(nat_stack, tmp_path / "drift.svg")
    assert found.returncode == 2, found.stdout + found.stderr
    text, drifted = drawn(tmp_path / "drift.svg")
    assert len(drifted) == 1 and "guest g1" in drifted[0] and "✗ gone" in drifted[0], drifted
    assert "guest g2" in text and bridge in text

    tree = picture(nat_stack, tmp_path / "drift.txt", "--format", "text")
    assert tree.returncode == 2, tree.stderr
    lines = (tmp_path / "drift.txt").read_text().splitlines()
    assert [line for line in lines if "guest g1 " in line][0].endswith("!! DRIFT: gone")
    assert not [line for line in lines if "guest g2 " in line and "DRIFT" in line]

    nat_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []
