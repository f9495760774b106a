"""kvmnet as a user installs it: the built wheel in a venv of its own, a Pulumi project of
one's own outside this repository, `pulumi up` of a NatNetwork on a lab host, `destroy`.

Nothing of this checkout is on that venv's path: it has the wheel and what the wheel
depends on, from the package index, and the lab host runs the agent with that venv's Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import host_props
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.toolchain import PulumiWorkspace

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
HOST = "h2"  # the models' tests use h1, the bridged test h2 (in its own stack, not now)

PROGRAM = textwrap.dedent(
    """
    import pulumi
    from kvmnet_provider import HostSettings, NatNetwork, NetworkArgs

    cfg = pulumi.Config("mine")
    host = HostSettings(**cfg.require_object("host"))
    net = NatNetwork(
        "net",
        NetworkArgs(connection=host, bridge="brw0", subnet="10.9.0.0/24", gateway="10.9.0.254"),
    )
    pulumi.export("bridge", net.bridge.name)
    pulumi.export("addresses", net.bridge.addresses)
    """
)


def run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{argv}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel built from this checkout and its dependencies, nothing else."""
    root = tmp_path_factory.mktemp("user")
    wheels = root / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)])
    (wheel,) = wheels.glob("kvmnet-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)])
    return venv


def test_a_users_project_with_the_wheel_builds_and_destroys_a_nat_network(
    tmp_path: Path, user_venv: Path, lab: LabStatus, lab_api: Lab
) -> None:
    python = str(user_venv / "bin" / "python3")
    # From the temp dir: run from the checkout, `python -c` would find its packages first.
    where = run([python, "-c", "import kvmnet_provider; print(kvmnet_provider.__file__)"], tmp_path)
    assert where.startswith(str(user_venv)), where
    lab_found = subprocess.run(
        [python, "-c", "import kvmnet_lab"], cwd=tmp_path, capture_output=True
    )
    assert lab_found.returncode != 0, "the user's venv must not see the lab"

    project = tmp_path / "mine"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        "name: mine\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
    )
    (project / "__main__.py").write_text(PROGRAM)
    ws = PulumiWorkspace(tmp_path / "pulumi", venv=user_venv)
    ws.run(["stack", "init", "dev"], project)
    host = lab.host(HOST)
    for key, value in host_props(host, python).items():  # as a user would type them
        key_path = f"mine:host.{key}"
        ws.run(["config", "set", "--path", "--stack", "dev", key_path, str(value)], project)

    before = host_snapshot(lab_api, host.namespace)
    try:
        up = ws.run(["up", "--yes", "--skip-preview", "--stack", "dev"], project)
        assert "created" in up.stdout
        outs = ws.outputs(project, "dev")
        assert outs == {"bridge": "brw0", "addresses": ["10.9.0.254/24"]}
        links = json.loads(run(["ip", "netns", "exec", host.namespace, "ip", "-j", "link"]))
        assert "brw0" in [link["ifname"] for link in links]
        rules = run(["ip", "netns", "exec", host.namespace, "iptables-legacy-save", "-t", "nat"])
        assert "-s 10.9.0.0/24 ! -d 10.9.0.0/24" in rules and "MASQUERADE" in rules
        ws.run(["preview", "--expect-no-changes", "--stack", "dev"], project)
    finally:
        ws.run(["destroy", "--yes", "--skip-preview", "--stack", "dev"], project, check=False)
    assert diff_snapshots(before, host_snapshot(lab_api, host.namespace)) == []
    ws.run(["stack", "rm", "--yes", "--stack", "dev"], project)
