"""The lab's state file and the typed status objects."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .keys import write_file

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass
class LabState:
    """What `up` recorded: enough for `status` and `down` to find everything."""

    name: str
    octet: int
    hosts: int = 0
    #: PIDs of the processes the lab started, by role ("h1", "ext-echo", ...)
    pids: dict[str, int] = field(default_factory=dict)
    version: int = STATE_VERSION

    @classmethod
    def load(cls, state_dir: Path) -> LabState | None:
        path = state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(
            name=str(data["name"]),
            octet=int(data["octet"]),
            hosts=int(data.get("hosts", 0)),
            pids={str(k): int(v) for k, v in dict(data.get("pids", {})).items()},
            version=int(data.get("version", STATE_VERSION)),
        )

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        write_file(state_dir / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n", 0o644)


@dataclass(frozen=True)
class HostStatus:
    name: str
    namespace: str
    address: str
    port: int
    user: str
    private_key: str
    known_hosts: str
    ssh_reachable: bool


@dataclass(frozen=True)
class ExtStatus:
    namespace: str
    address: str
    echo_port: int
    echo_log: str


@dataclass(frozen=True)
class LabStatus:
    name: str
    state_dir: str
    lan: str
    gateway: str
    operator_address: str
    hosts: list[HostStatus]
    ext: ExtStatus

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabStatus:
        return cls(
            name=data["name"],
            state_dir=data["state_dir"],
            lan=data["lan"],
            gateway=data["gateway"],
            operator_address=data["operator_address"],
            hosts=[HostStatus(**h) for h in data["hosts"]],
            ext=ExtStatus(**data["ext"]),
        )

    def host(self, name: str) -> HostStatus:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)
