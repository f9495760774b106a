"""The address-family seam: IPv4 renders exactly as before it existed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from family_render import GOLDEN, render_all


def test_ipv4_renders_byte_for_byte_as_the_golden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    got = json.dumps(render_all(monkeypatch, tmp_path), indent=1, sort_keys=True) + "\n"
    if os.environ.get("KVMNET_WRITE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text()
