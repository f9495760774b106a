"""Shared pytest fixtures."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.lab import Lab, LabStatus, fresh_lab
from kvmnet_lab.lab.vmhost import VmHost, start_vm_host, stop_vm_host
from kvmnet_lab.testing.debian_image import vmhost_image_dir


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


# --- the VM host (kvmnet_lab.lab.vmhost) -------------------------------------------
@pytest.fixture(scope="session")
def vm_host(_lab_session: tuple[Lab, LabStatus]) -> Iterator[VmHost]:
    """The VM host, booted once for the session and stopped by its PID afterwards."""
    lab_api, _ = _lab_session
    image = vmhost_image_dir()
    started = time.monotonic()
    try:
        host = start_vm_host(lab_api, image)
        print(f"\nVM host ({host.accelerator}) booted in {time.monotonic() - started:.1f}s")
        yield host
    finally:
        stop_vm_host(lab_api)


# --- side by side (pytest-xdist) ---------------------------------------------------------
# Tests of one file share their module's labs and guests, and every test marked vmhost shares
# the one VM host: each such set is a group that one worker runs whole (`--dist loadgroup`).
# The longest groups go first, so that no worker starts one of them when the rest is done.
FIRST = ("vmhost", "test_soak_e2e.py", "test_debian_guest_e2e.py", "test_firewall_e2e.py")


def _group(item: pytest.Item) -> str:
    return "vmhost" if item.get_closest_marker("vmhost") else item.path.name


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(_group(item), len(FIRST)))  # stable: files keep order
