"""Shared pytest fixtures."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmnet_provider.lab import Lab, LabStatus, SubnetConflict


# --- lab (kvmnet_provider.lab) -----------------------------------------------------------
def _lab_for_session(base: Path) -> Iterator[tuple[Lab, LabStatus]]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    last: Exception | None = None
    for _ in range(5):  # another lab may hold the /24 our random name hashes to: pick again
        name = "kt" + secrets.token_hex(3)
        lab = Lab(name, base / name)
        try:
            status = lab.up(hosts=2)
        except SubnetConflict as exc:
            last = exc
            lab.down()
            continue
        except BaseException:
            lab.down()
            raise
        try:
            yield lab, status
        finally:
            lab.down()
        return
    raise RuntimeError(f"no free lab subnet: {last}")


@pytest.fixture(scope="session")
def _lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, LabStatus]]:
    yield from _lab_for_session(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def lab(_lab_session: tuple[Lab, LabStatus]) -> LabStatus:
    """A lab with 2 hosts (unique name "kt<hex>"), up for the whole session, always torn down."""
    return _lab_session[1]


@pytest.fixture(scope="session")
def lab_api(_lab_session: tuple[Lab, LabStatus]) -> Lab:
    """The Lab object behind the `lab` fixture (exec_in, status(), names, ...)."""
    return _lab_session[0]
