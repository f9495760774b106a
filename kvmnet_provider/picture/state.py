"""A stack's state (`pulumi stack export` JSON) as a Picture: hosts holding bridges, bridges
holding taps and their labels (model, addresses, uplink, DHCP, NAT, port forwards), taps
holding the guests that open them.

Every kvmnet resource is known on its host by `connection.host:port`; a network's resources
share a parent (the model's ComponentResource), which names the bridge's model and ties the
host-wide ones (masquerade, port forwards) to their bridge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DYNAMIC_PREFIX = "pulumi-python:dynamic/kvmnet:"
NETWORK_PREFIX = "kvmnet:index:"
STACK_TYPE = "pulumi:pulumi:Stack"


class StateError(ValueError):
    """The input is not a `pulumi stack export` of a stack."""


@dataclass
class Resource:
    """One kvmnet resource of the state: its kind (Bridge, TapPort, ...) and outputs."""

    urn: str
    kind: str
    name: str
    host: str  # host:port
    parent: str | None
    outputs: dict[str, Any]
    drift: list[str] = field(default_factory=list)  # what the live read found different


@dataclass
class Guest:
    name: str
    resource: Resource
    addresses: list[str]
    status: str
    pid: int | None


@dataclass
class Tap:
    name: str
    resource: Resource | None
    guests: list[Guest] = field(default_factory=list)


@dataclass
class Bridge:
    name: str
    resource: Resource | None  # None: a bridge the state does not hold (external)
    model: str = ""
    addresses: list[str] = field(default_factory=list)
    uplink: str | None = None  # the NIC an UplinkBridge took over, or the NAT's way out
    labels: list[tuple[str, Resource]] = field(default_factory=list)  # DHCP, NAT, forwards
    taps: list[Tap] = field(default_factory=list)


@dataclass
class Host:
    key: str  # host:port, as the resources' connections name it
    label: str  # the fleet's host name when the stack's outputs give one, else the address
    bridges: list[Bridge] = field(default_factory=list)
    labels: list[tuple[str, Resource]] = field(default_factory=list)  # host-wide settings
    loose_guests: list[Guest] = field(default_factory=list)  # on no tap of the state
    unreadable: str | None = None  # why the live read could not reach it


@dataclass
class Picture:
    stack: str
    hosts: list[Host]
    resources: list[Resource]
    live: bool = False  # whether live reads marked the drift

    def drifted(self) -> list[Resource]:
        return [r for r in self.resources if r.drift]


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _resources(export: dict[str, Any]) -> list[dict[str, Any]]:
    deployment = export.get("deployment") if isinstance(export, dict) else None
    if not isinstance(deployment, dict):
        raise StateError("no `deployment` object: is this the output of `pulumi stack export`?")
    found = deployment.get("resources") or []
    if not isinstance(found, list):
        raise StateError("`deployment.resources` is not a list")
    return [r for r in found if isinstance(r, dict) and isinstance(r.get("urn"), str)]


def _stack_name(raw: list[dict[str, Any]]) -> str:
    for r in raw:
        if r.get("type") == STACK_TYPE:
            stack, project = r["urn"].split("::")[:2]  # urn:pulumi:STACK::PROJECT::TYPE::NAME
            return f"{project}/{stack.split(':')[-1]}"
    return "(no stack resource)"


def _host_names(raw: list[dict[str, Any]]) -> dict[str, str]:
    """A fleet's host names by address, from its `hosts` output ({NAME: {host: ADDRESS}})."""
    for r in raw:
        if r.get("type") == STACK_TYPE:
            hosts = (r.get("outputs") or {}).get("hosts")
            if isinstance(hosts, dict):
                return {
                    str(v["host"]): str(k)
                    for k, v in hosts.items()
                    if isinstance(v, dict) and isinstance(v.get("host"), str)
                }
    return {}


def _kvmnet_resource(r: dict[str, Any]) -> Resource | None:
    kind = str(r.get("type", ""))
    if not kind.startswith(DYNAMIC_PREFIX):
        return None
    outputs = r.get("outputs") or {}
    conn = outputs.get("connection")
    if not isinstance(conn, dict) or not isinstance(conn.get("host"), str):
        return None
    return Resource(
        urn=r["urn"],
        kind=kind[len(DYNAMIC_PREFIX) :],
        name=urn_name(r["urn"]),
        host=f"{conn['host']}:{int(conn.get('port', 22))}",
        parent=r.get("parent"),
        outputs=outputs,
    )


def _models(raw: list[dict[str, Any]]) -> dict[str, str]:
    """Each network component's model by its URN (NatNetwork -> nat)."""
    found = {}
    for r in raw:
        kind = str(r.get("type", ""))
        if kind.startswith(NETWORK_PREFIX) and kind.endswith("Network"):
            found[r["urn"]] = kind[len(NETWORK_PREFIX) : -len("Network")].lower()
    return found


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def describe(r: Resource) -> str | None:
    """The label of a resource drawn as text on its bridge or host (None: drawn as a box)."""
    out = r.outputs
    if r.kind == "DhcpServer":
        span = out.get("dhcp_range") or ["upper half"]
        pid = f", dnsmasq pid {out['pid']}" if out.get("pid") else ""
        return f"DHCP {out.get('subnet')} range {'-'.join(map(str, span))}{pid}"
    if r.kind == "MasqueradeRule":
        return f"NAT {out.get('source')} out {out.get('out_interface') or 'any NIC'}"
    if r.kind == "PortForward":
        where = out.get("destination") or "host"
        return (
            f"forward {out.get('protocol', 'tcp')} {where}:{out.get('host_port')} -> "
            f"{out.get('guest_address')}:{out.get('guest_port')}"
        )
    if r.kind == "ForwardRules":
        return f"forward rules ({out.get('mode')}, {out.get('backend') or 'firewall'})"
    if r.kind == "NetworkCheck":
        passed = ", ".join(_strings(out.get("passed"))) or "nothing"
        return f"verified: {passed} ({out.get('checked_at') or 'not yet'})"
    if r.kind == "ForwardingSetting":
        return "IPv4 forwarding on" + (" (and IPv6)" if out.get("ipv6") else "")
    return None


LABEL_ORDER = (
    "DhcpServer",
    "MasqueradeRule",
    "PortForward",
    "ForwardRules",
    "ForwardingSetting",
    "NetworkCheck",
)


def _label_order(label: tuple[str, Resource]) -> tuple[int, str]:
    kind = label[1].kind
    return (LABEL_ORDER.index(kind) if kind in LABEL_ORDER else len(LABEL_ORDER), label[0])


class _Builder:
    def __init__(self, raw: list[dict[str, Any]]) -> None:
        self.names = _host_names(raw)
        self.models = _models(raw)
        self.resources = [r for r in map(_kvmnet_resource, raw) if r is not None]
        self.hosts: dict[str, Host] = {}
        self.bridges: dict[tuple[str, str], Bridge] = {}
        self.by_network: dict[tuple[str, str], Bridge] = {}  # (host, parent urn) -> its bridge

    def host(self, key: str) -> Host:
        if key not in self.hosts:
            address = key.rsplit(":", 1)[0]
            label = self.names.get(address)
            self.hosts[key] = Host(key, f"{label} ({key})" if label else key)
        return self.hosts[key]

    def bridge(self, host: str, name: str) -> Bridge:
        if (host, name) not in self.bridges:
            made = Bridge(name, None, model="external")
            self.bridges[(host, name)] = made
            self.host(host).bridges.append(made)
        return self.bridges[(host, name)]

    def build(self, stack: str) -> Picture:
        kinds = ("Bridge", "UplinkBridge", "TapPort", "QemuGuest")
        for kind in kinds:
            for r in (r for r in self.resources if r.kind == kind):
                getattr(self, f"add_{kind.lower()}")(r)
        for r in self.resources:
            if r.kind not in kinds:
                self.add_label(r)
        for host in self.hosts.values():
            host.bridges.sort(key=lambda b: b.name)
            host.labels.sort(key=_label_order)
            for bridge in host.bridges:
                bridge.labels.sort(key=_label_order)
                bridge.taps.sort(key=lambda t: t.name)
        return Picture(stack, sorted(self.hosts.values(), key=lambda h: h.label), self.resources)

    def _add_bridge(self, r: Resource, addresses: list[str], uplink: str | None) -> None:
        name = str(r.outputs.get("name"))
        made = self.bridge(r.host, name)
        made.resource, made.addresses, made.uplink = r, addresses, uplink
        made.model = self.models.get(r.parent or "", "")
        if r.parent:
            self.by_network[(r.host, r.parent)] = made

    def add_bridge(self, r: Resource) -> None:
        self._add_bridge(r, _strings(r.outputs.get("addresses")), None)

    def add_uplinkbridge(self, r: Resource) -> None:
        out = r.outputs
        addresses = _strings(out.get("live_addresses")) or _strings(out.get("addresses"))
        self._add_bridge(r, addresses, str(out.get("nic")))

    def add_tapport(self, r: Resource) -> None:
        self.host(r.host)
        bridge = self.bridge(r.host, str(r.outputs.get("bridge")))
        bridge.taps.append(Tap(str(r.outputs.get("name")), r))

    def add_qemuguest(self, r: Resource) -> None:
        out = r.outputs
        pid = out.get("pid")
        guest = Guest(
            name=str(out.get("name")),
            resource=r,
            addresses=_strings(out.get("addresses")),
            status=str(out.get("status") or "unknown"),
            pid=pid if isinstance(pid, int) else None,
        )
        wanted = [n.get("tap") for n in out.get("nics") or [] if isinstance(n, dict)]
        for bridge in self.host(r.host).bridges:
            for tap in bridge.taps:
                if tap.name in wanted:
                    tap.guests.append(guest)
        if not any(g is guest for b in self.host(r.host).bridges for t in b.taps for g in t.guests):
            self.host(r.host).loose_guests.append(guest)

    def add_label(self, r: Resource) -> None:
        text = describe(r)
        if text is None:
            return
        out = r.outputs
        bridge = None
        if r.kind in ("DhcpServer", "ForwardRules", "NetworkCheck") and out.get("bridge"):
            bridge = self.bridge(r.host, str(out["bridge"]))
        elif r.parent and (r.host, r.parent) in self.by_network:
            bridge = self.by_network[(r.host, r.parent)]
        if bridge is None:
            self.host(r.host).labels.append((text, r))
            return
        bridge.labels.append((text, r))
        if r.kind == "MasqueradeRule" and out.get("out_interface") and not bridge.uplink:
            bridge.uplink = str(out["out_interface"])


def picture_from_export(export: dict[str, Any]) -> Picture:
    """The Picture of a `pulumi stack export` document (already parsed from JSON)."""
    raw = _resources(export)
    return _Builder(raw).build(_stack_name(raw))
