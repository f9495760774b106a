"""The real Pulumi engine, offline, driving a dynamic resource from the installed package."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from kvmnet_lab.toolchain import PulumiWorkspace, pulumi_bin_dir

pytestmark = pytest.mark.e2e

PROGRAM = textwrap.dedent(
    """
    import pulumi
    from kvmnet_lab.testing.roundtrip import Noop

    cfg = pulumi.Config()
    thing = Noop("thing", message=cfg.get("message") or "hello")
    pulumi.export("message", thing.message)
    pulumi.export("digest", thing.digest)
    """
)


def write_project(root: Path, name: str, program: str) -> Path:
    project = root / name
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        f"name: {name}\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
    )
    (project / "__main__.py").write_text(program)
    return project


def test_engine_is_the_real_cli(tmp_path: Path) -> None:
    ws = PulumiWorkspace(tmp_path)
    version = ws.run(["version"], tmp_path).stdout.strip()
    assert version.startswith("v3."), version
    for tool in ("pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python"):
        assert (pulumi_bin_dir() / tool).stat().st_mode & 0o111, tool


def test_up_preview_refresh_destroy(tmp_path: Path) -> None:
    ws = PulumiWorkspace(tmp_path / "ws")
    project = write_project(tmp_path, "roundtrip", PROGRAM)
    ws.run(["stack", "init", "dev"], project)
    try:
        up = ws.run(["up", "--yes", "--skip-preview"], project)
        assert "+ 2 created" in up.stdout, up.stdout
        outs = ws.outputs(project, "dev")
        assert outs["message"] == "hello"
        assert isinstance(outs["digest"], str) and len(outs["digest"]) == 16

        ws.run(["preview", "--expect-no-changes"], project)

        refresh = ws.run(["refresh", "--yes", "--skip-preview"], project)
        assert "error" not in refresh.stdout.lower()

        ws.run(["config", "set", "message", "changed"], project)
        changed = ws.run(["preview", "--expect-no-changes"], project, check=False)
        assert changed.returncode != 0, "a changed input must show up in preview"
        ws.run(["up", "--yes", "--skip-preview"], project)
        assert ws.outputs(project, "dev")["message"] == "changed"

        state = json.loads(ws.run(["stack", "export"], project).stdout)
        types = {r["type"] for r in state["deployment"]["resources"]}
        assert any(t.startswith("pulumi-python:dynamic") for t in types), types
    finally:
        ws.run(["destroy", "--yes", "--skip-preview"], project, check=False)
    state = json.loads(ws.run(["stack", "export"], project).stdout)
    assert not [r for r in state["deployment"].get("resources") or [] if "dynamic" in r["type"]]
    ws.run(["stack", "rm", "--yes", "dev"], project)
