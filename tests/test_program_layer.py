"""The program layer's promises: the one-host program is a fleet of one, each network exports
the same outputs either way, and the product's modules import one another without a cycle."""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from program_mocks import Mocks, ensure_event_loop

from kvmnet_provider.errors import ConfigError
from kvmnet_provider.models import NetworkArgs, collisions
from kvmnet_provider.models.networks import NETWORK_CLASSES
from kvmnet_provider.spec.models import MODEL_NAMES, MODELS

REPO = Path(__file__).resolve().parent.parent
IMAGE = {"kernel": "/k", "initrd": "/i"}
CONNECTION = {"host": "192.0.2.1", "user": "kvm", "port": 2222}


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    ensure_event_loop()
    collisions.forget_all()
    yield
    collisions.forget_all()
    pulumi.runtime.set_all_config({})


def network_keys(model: str) -> dict[str, Any]:
    """A network of `model` with every key its model takes set, none to its default."""
    keys: dict[str, Any] = {
        "model": model,
        "bridge": "br-x",
        "subnet": "10.0.7.0/24",
        "guests": [
            {"name": "a1", "address": "10.0.7.11", "tap": "vx1", "mac": "52:54:00:00:07:01",
             "memory_mib": 192, "stop_timeout": 4},
            {"name": "a2", "address": "10.0.7.12", "tap": "vx2", "mac": "52:54:00:00:07:02"},
        ],
    }  # fmt: skip
    if MODELS[model].guest_gateway:
        keys["gateway"] = "10.0.7.1"
    if MODELS[model].dhcp:
        keys.update(domain="lab.test", dhcpRange=["10.0.7.100", "10.0.7.120"])
    if MODELS[model].nat:
        forward = {"guest": "a1", "guest_port": 22, "host_port": 2222, "protocol": "udp"}
        keys.update(uplink="eth1", portForwards=[forward])
    if MODELS[model].uplink_bridge:
        keys.update(uplink="eth0", bridgeAddresses=["198.18.0.11/24"], rollbackSeconds=45)
    return keys


def one_host_config(keys: dict[str, Any]) -> dict[str, Any]:
    return {"host": CONNECTION, **keys}


def fleet_config(keys: dict[str, Any]) -> dict[str, Any]:
    return {"hosts": {"h1": {"connection": CONNECTION, "networks": [{"name": "net", **keys}]}}}


def set_config(values: dict[str, Any]) -> None:
    values = {**values, "guestImage": IMAGE, "accelerator": "tcg"}
    pulumi.runtime.set_all_config(
        {f"kvmnet:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    )


def declared(values: dict[str, Any]) -> tuple[str | None, str, str, NetworkArgs]:
    """(host name, network resource name, model, NetworkArgs) of a stack of one network."""
    from kvmnet_provider.program.hosts import read_hosts

    set_config(values)
    (host,) = read_hosts(pulumi.Config("kvmnet"))
    (network,) = host.networks
    return host.name, network.resource_name, network.model, network.args


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_the_one_host_program_and_a_fleet_of_one_make_the_same_network_args(model: str) -> None:
    keys = network_keys(model)
    one = declared(one_host_config(keys))
    fleet = declared(fleet_config(keys))
    assert one[:3] == (None, "net", model) and fleet[:3] == ("h1", "h1-net", model)
    # Only where the keys are differs: the config path errors name.
    assert one[3].config_key == "kvmnet:"
    assert fleet[3].config_key == "kvmnet:hosts.h1.networks[0]"
    assert dataclasses.replace(one[3], config_key=None) == dataclasses.replace(
        fleet[3], config_key=None
    )


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_both_programs_fill_in_the_same_defaults(model: str) -> None:
    keys = {
        "model": model,
        "guests": [{"name": "a1", "address": "10.0.1.11", "mac": "52:54:00:00:07:01"}],
    }
    if MODELS[model].uplink_bridge:
        keys["uplink"] = "eth0"
    one = declared(one_host_config(keys))[3]
    fleet = declared(fleet_config(keys))[3]
    assert dataclasses.replace(one, config_key=None) == dataclasses.replace(fleet, config_key=None)
    assert (one.bridge, one.subnet, one.rollback_seconds) == ("br-in", "10.0.1.0/24", 30)
    assert one.gateway == ("10.0.1.254" if MODELS[model].guest_gateway else None)


@pytest.mark.parametrize(
    ("values", "line"),
    [
        (one_host_config({"model": "mesh"}), "kvmnet:model: unknown model 'mesh'; choose one of "),
        (fleet_config({"model": "mesh"}), "kvmnet:hosts.h1.networks[0].model: unknown model"),
        (one_host_config({"rollbackSeconds": "soon"}), "kvmnet:rollbackSeconds: must be a whole"),
        (fleet_config({"dhcp": "yes"}), "kvmnet:hosts.h1.networks[0].dhcp: must be true or false"),
    ],
)  # fmt: skip
def test_one_checker_names_the_path_in_either_program(values: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        declared(values)
    assert str(caught.value).startswith(line), str(caught.value)


def exported(values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The stack outputs build() exports for `values`, resolved under the mocks."""
    from kvmnet_provider.program import build

    found: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", found.__setitem__)
    set_config(values)
    pulumi.runtime.set_mocks(Mocks(), project="kvt", stack="dev", preview=False)
    build()
    return found


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_a_fleets_network_exports_what_the_one_host_program_does(
    model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = network_keys(model)
    one = exported(one_host_config(keys), monkeypatch)
    collisions.forget_all()
    fleet = exported(fleet_config(keys), monkeypatch)
    assert fleet["model"] == "fleet" and one["host"] == fleet["hosts"]["h1"]["host"]
    network = fleet["hosts"]["h1"]["networks"]["net"]
    assert set(one) - {"host"} == set(network)
    addresses = "uplink_addresses" if MODELS[model].uplink_bridge else "bridge_addresses"
    assert addresses in network and ("leases" in network) == MODELS[model].dhcp


def test_every_model_has_its_class() -> None:
    assert {name: cls.model for name, cls in NETWORK_CLASSES.items()} == {
        name: name for name in MODEL_NAMES
    }


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The product's modules `path` imports when it runs (not those under TYPE_CHECKING):
    `from . import a` names the submodule a, `from .x import y` the module x (or x.y when y
    is a module)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package[: len(package) - node.level + 1], *filter(None, [node.module])]
                )
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            whole = node.module is not None and len(subs) < len(node.names)
            targets = subs + ([base] if whole else [])
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_import_cycle_in_the_product() -> None:
    files = {module_name(p): p for p in (REPO / "kvmnet_provider").rglob("*.py")}
    graph = {name: runtime_imports(path, set(files)) for name, path in files.items()}
    cycles = []
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycles.append(trail[trail.index(name) :] + [name])
            return
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []
