"""`kvmnet-picture` as an operator runs it against a test's stack, and what its SVG draws.

>>> done = draw_live(stack, tmp_path / "now.svg")   # exit 0: no drift, 2: drift
>>> drawing = read_svg(tmp_path / "now.svg")
>>> drawing.texts, drawing.drifted                   # every text line; each drifted box's text
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .stack import TestStack

__all__ = ["Drawing", "draw_live", "kill_and_wait", "read_svg"]

SVG = "{http://www.w3.org/2000/svg}"
PICTURE = Path(sys.executable).parent / "kvmnet-picture"


def draw_live(stack: TestStack, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The picture of `stack` with live reads, written to `out`, run in the stack's project."""
    argv = [str(PICTURE), "--cwd", str(stack.dir), "--stack", stack.stack, "--live", *extra]
    return subprocess.run(
        [*argv, "-o", str(out)], env=stack.ws.env(), capture_output=True, text=True, timeout=180
    )


@dataclass(frozen=True)
class Drawing:
    text: str  # all of the SVG's text, joined
    texts: list[str]  # each <text> element's text, in order
    drifted: list[str]  # the text of each group the SVG marks as drifted


def read_svg(svg: Path) -> Drawing:
    """Parse `svg` (it must be well-formed XML) into what it draws."""
    root = ET.parse(svg).getroot()
    drifted = [
        "".join(g.itertext())
        for g in root.iter(f"{SVG}g")
        if "drift" in (g.get("class") or "").split()
    ]
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    return Drawing("".join(root.itertext()), texts, drifted)


def kill_and_wait(pid: int, seconds: float = 20) -> None:
    """SIGKILL `pid` (a guest's QEMU the test's stack started) and wait until it is dead."""
    os.kill(pid, signal.SIGKILL)
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
