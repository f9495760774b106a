"""A Pulumi workspace finds and stops what an engine killed mid-run left running: its plugins
run in process groups of their own, so killing the engine's group does not reach them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kvmnet_lab.toolchain import PulumiWorkspace


def test_a_workspace_reaps_only_its_own_strays(tmp_path: Path) -> None:
    ours, theirs = PulumiWorkspace(tmp_path / "ours"), PulumiWorkspace(tmp_path / "theirs")
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    procs = [
        subprocess.Popen(sleep, env={**os.environ, **ws.settings()}, start_new_session=True)
        for ws in (ours, theirs)
    ]
    try:
        assert ours.strays() == [procs[0].pid]
        assert ours.reap() == [procs[0].pid]
        assert procs[0].wait(10) != 0 and ours.strays() == []
        assert procs[1].poll() is None  # another workspace's process is left alone
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
