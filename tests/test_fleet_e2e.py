"""A fleet through the real engine: stacks/Pulumi.lab-fleet.yaml on 3 lab hosts, every host's
reachability observed from inside its guests, one host down during `up` failing only its own
resources, the fleet's picture (kvmnet-picture with live reads) holding every host, bridge and
guest and marking one guest killed behind kvmnet's back, and destroy leaving every host as it
was."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kvmnet_lab.fleetprobe import format_fleet, observe_fleet
from kvmnet_lab.hostconfig import fleet_stack_config
from kvmnet_lab.lab import Lab, LabStatus, fresh_lab
from kvmnet_lab.probe import EXPECTED
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.picture import draw_live, kill_and_wait, read_svg
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import STACK_PROGRAM, TestStack

pytestmark = pytest.mark.e2e

TEMPLATE = Path(__file__).resolve().parent.parent / "stacks" / "Pulumi.lab-fleet.yaml"


@pytest.fixture(scope="module")
def fleet_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, LabStatus]]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: e2e tests run as root (`make check` runs the others)")
    with fresh_lab("kf", hosts=3, base=tmp_path_factory.mktemp("fleetlab")) as lab_and_status:
        yield lab_and_status


def template_hosts() -> dict[str, Any]:
    hosts: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())["config"]["kvmnet:hosts"]
    return hosts


def stop_sshd(lab: Lab, host: str) -> None:
    """Stop the lab's sshd of `host` (a process the lab started), and wait until it is gone."""
    pid = lab.recorded_pids()[host]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"sshd {pid} of {host} did not stop")


def guest_hosts(stack: TestStack) -> list[str]:
    """The host address of each QemuGuest in the stack's state."""
    return sorted(r["inputs"]["connection"]["host"] for r in stack.resources("QemuGuest"))


def drawn_names(texts: list[str], kind: str) -> Counter[str]:
    """How often the picture draws each `kind` ("host", "bridge", "guest") by name: the first
    word after the kind in each box's first line."""
    return Counter(t.split()[1] for t in texts if t.startswith(f"{kind} "))


def check_picture(stack: TestStack, outputs: dict[str, Any], tmp_path: Path) -> None:
    """The fleet's picture names every host, bridge and guest (each as often as the stack has
    it); after one guest's QEMU is killed, that guest, and only it, is marked gone."""
    clean = draw_live(stack, tmp_path / "fleet.svg")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    drawing = read_svg(tmp_path / "fleet.svg")  # parses: well-formed XML
    assert drawing.drifted == [], drawing.drifted
    hosts = outputs["hosts"]
    networks = [net for host in hosts.values() for net in host["networks"].values()]
    assert drawn_names(drawing.texts, "host") == Counter(list(hosts))
    assert drawn_names(drawing.texts, "bridge") == Counter(n["bridge"] for n in networks)
    assert drawn_names(drawing.texts, "guest") == Counter(g for n in networks for g in n["guests"])
    for name, host in hosts.items():
        assert f"host {name} ({host['host']}:22)" in drawing.texts, drawing.texts
    assert "live reads: 0 drifted, 0 hosts not read" in drawing.text

    pid = int(hosts["h2"]["networks"]["nat"]["guests"]["g1"]["pid"])
    kill_and_wait(pid)  # h2's g1: a guest of this test's stack, on its lab host
    found = draw_live(stack, tmp_path / "drift.svg")
    assert found.returncode == 2, found.stdout + found.stderr
    drawing = read_svg(tmp_path / "drift.svg")
    (drifted,) = drawing.drifted  # one box: h1's and h3's g1 are the same name, not drifted
    assert "guest g1" in drifted and f"pid {pid}" in drifted and "✗ gone" in drifted, drifted
    assert "live reads: 1 drifted, 0 hosts not read" in drawing.text


def test_fleet_of_three_hosts(tmp_path: Path, fleet_lab: tuple[Lab, LabStatus]) -> None:
    lab_api, lab = fleet_lab
    h1, h2, h3 = lab.hosts
    before = {h.name: host_snapshot(lab_api, h.namespace) for h in lab.hosts}
    stack = TestStack(tmp_path, STACK_PROGRAM, project="kvmnet", stack="fleet")
    try:
        config = fleet_stack_config(lab, template_hosts(), image_dir=guest_image_dir())
        # h3 authenticates with its own key from secret config, not a key file.
        del config["kvmnet:hosts"]["h3"]["connection"]["private_key_path"]
        stack.config_values(config)
        stack.config("kvmnet:accelerator", "tcg")
        key_text = Path(h3.private_key).read_text()
        stack.ws.run(
            ["config", "set", "--secret", "--path", "--stack", stack.stack]
            + ["kvmnet:hosts.h3.sshPrivateKey", "--", key_text],
            stack.dir,
        )

        # h2's sshd is down for the whole first `up`: its resources fail, one line each naming
        # the host; h1's and h3's finish (--continue-on-error: the engine keeps scheduling them).
        stop_sshd(lab_api, "h2")
        first = stack.pulumi("up", "--yes", "--skip-preview", "--continue-on-error", check=False)
        out = first.stdout + first.stderr
        assert first.returncode != 0, out
        failed = set(re.findall(r"kvmnet:\w+ (\S+) \*\*creating failed\*\*", out))
        assert failed and all(name.startswith("h2-") for name in failed), out
        cause = f"root@{h2.address}:22: unreachable: Connection refused"
        causes = [line for line in out.splitlines() if cause in line]
        assert len(causes) >= len(failed), out  # each failing resource names the host
        others = [ln for ln in out.splitlines() if re.search(r"@\S+: unreachable", ln)]
        assert all(cause in line for line in others), out  # no other host failed
        assert guest_hosts(stack) == sorted([h1.address] * 4 + [h3.address] * 2), out

        # h2 back: the next `up` converges, and every host's networks do what their model says.
        lab_api.up(hosts=3)
        stack.up()
        assert guest_hosts(stack) == sorted([h1.address] * 4 + [h2.address, h3.address] * 2)
        outputs = stack.outputs()
        observed = observe_fleet(outputs, lab)
        print(format_fleet(observed, lab))
        got = {(n.host, n.name): o.as_dict() for n, o in observed}
        assert got == {
            ("h1", "nat"): EXPECTED["nat"],
            ("h1", "routed"): EXPECTED["routed"],
            ("h2", "nat"): EXPECTED["nat"],
            ("h3", "nat"): EXPECTED["nat"],
        }
        # Refresh reads every resource (link reads batched per host): nothing drifted.
        refresh = stack.refresh()
        assert "deleted" not in refresh.stdout and "updated" not in refresh.stdout, refresh.stdout
        stack.preview_no_changes()
        secret_line = key_text.splitlines()[1]
        assert secret_line not in str(stack.export())  # the per-host key is not in the state

        check_picture(stack, outputs, tmp_path)  # last: it kills a guest; destroy follows
        stack.destroy()
        for h in lab.hosts:
            assert diff_snapshots(before[h.name], host_snapshot(lab_api, h.namespace)) == [], h.name
    finally:
        stack.remove()
