"""A lab host as kvmnet sees it: HostSettings, and the stack config of a lab stack.

The stack program reads plain stack config (kvmnet_provider/program/); this is where the
lab turns a running lab (and the test guest image) into that config, for the demo's stacks
and the tests' stacks alike.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from kvmnet_provider.connection import HostSettings

from .lab.state import HostStatus, LabStatus
from .toolchain import venv_python

# The test image ignores ACPI power-down: delete need not wait for it.
TEST_IMAGE_STOP_TIMEOUT = 2


def host_props(host: HostStatus, python: str | None = None) -> dict[str, Any]:
    """The `kvmnet:host` value for a lab host. Lab hosts share this machine's filesystem, so
    the agent runs with this venv's Python unless told otherwise."""
    return {
        "host": host.address,
        "port": host.port,
        "user": host.user,
        "known_hosts": host.known_hosts,
        "private_key_path": host.private_key,
        "python": python or venv_python(),
    }


def host_settings(host: HostStatus, python: str | None = None) -> HostSettings:
    return HostSettings.from_props(host_props(host, python))


def lan_guests(lan: str, count: int = 2) -> list[dict[str, Any]]:
    """Bridged guests are peers on the lab LAN: .50, .51, ..."""
    base = ipaddress.ip_network(lan).network_address
    return [{"name": f"g{i}", "address": str(base + 49 + i)} for i in range(1, count + 1)]


def lab_stack_config(
    status: LabStatus,
    model: str | None = None,
    host: str = "h1",
    image_dir: Path | None = None,
) -> dict[str, Any]:
    """Stack config (full keys, `kvmnet:...`) that puts a model on a lab host.

    With `image_dir` the guests boot the test image directly. The bridged model bridges the
    host's eth0, and its guests live on the lab's LAN, with its gateway.
    """
    config: dict[str, Any] = {"kvmnet:host": host_props(status.host(host))}
    if image_dir is not None:
        config["kvmnet:guestImage"] = {
            "kernel": str(image_dir / "vmlinuz"),
            "initrd": str(image_dir / "initrd.img"),
        }
        config["kvmnet:guestStopTimeout"] = TEST_IMAGE_STOP_TIMEOUT
    if model is not None:
        config["kvmnet:model"] = model
    if model == "bridged":
        config["kvmnet:subnet"] = status.lan
        config["kvmnet:gateway"] = status.gateway
        config["kvmnet:uplink"] = "eth0"  # a lab host's one NIC
        config["kvmnet:guests"] = lan_guests(status.lan)
    return config


def write_stack_config(path: Path, values: dict[str, Any]) -> None:
    """Merge `values` into the stack config file at `path` (created if missing), keeping
    everything else in it, the encryption salt and secrets included."""
    doc: dict[str, Any] = {}
    if path.exists():
        doc = yaml.safe_load(path.read_text()) or {}
    config = doc.setdefault("config", {})
    config.update(values)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def fleet_stack_config(
    status: LabStatus, hosts: dict[str, Any], image_dir: Path | None = None
) -> dict[str, Any]:
    """Stack config for a fleet stack (`kvmnet:hosts`, see kvmnet_provider/program/): `hosts`
    (a template's, keyed by lab host name) with each lab host's connection filled in."""
    filled = {
        name: {**spec, "connection": host_props(status.host(name))} for name, spec in hosts.items()
    }
    config: dict[str, Any] = {"kvmnet:hosts": filled}
    if image_dir is not None:
        config["kvmnet:guestImage"] = {
            "kernel": str(image_dir / "vmlinuz"),
            "initrd": str(image_dir / "initrd.img"),
        }
        config["kvmnet:guestStopTimeout"] = TEST_IMAGE_STOP_TIMEOUT
    return config
