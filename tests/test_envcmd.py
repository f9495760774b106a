"""`kvmnet env`: the export lines for running pulumi yourself, for this checkout's venv or
for the venv of a project of your own (`--venv`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

KVMNET = [sys.executable, "-m", "kvmnet_lab.cli"]


def env_lines(*args: str) -> dict[str, str]:
    out = subprocess.run([*KVMNET, "env", *args], capture_output=True, text=True, check=True)
    lines = [x.removeprefix("export ") for x in out.stdout.splitlines() if x.startswith("export ")]
    return dict(x.split("=", 1) for x in lines)


def test_a_projects_own_venv_runs_its_program_and_the_provider() -> None:
    venv = Path(sys.prefix)  # a venv with kvmnet installed: this one
    settings = env_lines("--venv", str(venv))
    assert settings["PULUMI_PYTHON_CMD"] == str(venv / "bin" / "python3")
    assert settings["PULUMI_RUNTIME_VIRTUALENV"] == str(venv)
    assert settings["PATH"].split(":")[1] == str(venv / "bin")  # after the engine's own


def test_a_folder_that_is_not_a_venv_with_kvmnet_is_refused_in_one_line(tmp_path: Path) -> None:
    for made in ("nothing", "a venv without kvmnet"):
        if made != "nothing":
            venv = [sys.executable, "-m", "venv", "--without-pip", str(tmp_path)]
            subprocess.run(venv, check=True)
        out = subprocess.run(
            [*KVMNET, "env", "--venv", str(tmp_path)], capture_output=True, text=True
        )
        assert out.returncode == 2, out
        last = out.stderr.strip().splitlines()[-1]
        want = "not a venv" if made == "nothing" else "kvmnet is not installed in it"
        assert want in last and "Traceback" not in out.stderr, out.stderr
