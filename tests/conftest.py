"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.lab import Lab, LabStatus, fresh_lab


# --- lab (kvmnet_lab.lab) -----------------------------------------------------------
def _lab_for_session(base: Path) -> Iterator[tuple[Lab, LabStatus]]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: e2e tests run as root (`make check` runs the others)")
    with fresh_lab("kt", hosts=2, base=base) as lab_and_status:
        yield lab_and_status


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
