"""A Picture as a tree for terminals: host, bridge (model, addresses, uplink), its labels
(DHCP, NAT, port forwards), taps and their guests; drift marked `!! DRIFT: ...` on the line
of what drifted, and summed up at the end."""

from __future__ import annotations

from collections.abc import Callable

from .state import Bridge, Guest, Host, Picture, Resource, Tap

MARK = "!! DRIFT"


def _drift(resource: Resource | None) -> str:
    if resource is None or not resource.drift:
        return ""
    return f"  {MARK}: {'; '.join(resource.drift)}"


def guest_line(guest: Guest) -> str:
    addresses = ", ".join(guest.addresses) or "no address yet"
    pid = f" pid {guest.pid}" if guest.pid is not None else ""
    return f"guest {guest.name}  {addresses}  {guest.status}{pid}{_drift(guest.resource)}"


def bridge_line(bridge: Bridge) -> str:
    parts = [f"bridge {bridge.name}"]
    if bridge.model:
        parts.append(f"[{bridge.model}]")
    parts.append(", ".join(bridge.addresses) or "no address")
    if bridge.uplink:
        parts.append(f"uplink {bridge.uplink}")
    if bridge.resource is None:
        parts.append("(not in this stack)")
    return "  ".join(parts) + _drift(bridge.resource)


def tap_line(tap: Tap) -> str:
    return f"tap {tap.name}" + _drift(tap.resource)


class _Tree:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, prefix: str, last: bool, text: str) -> str:
        self.lines.append(f"{prefix}{'└── ' if last else '├── '}{text}")
        return prefix + ("    " if last else "│   ")


def _counter(total: int) -> Callable[[], bool]:
    """Called once per row, in order: whether this row is the last one."""
    rows = iter(range(total))
    return lambda: next(rows) == total - 1


def _host(tree: _Tree, host: Host, live: bool) -> None:
    head = f"host {host.label}"
    if live and host.unreadable:
        head += f"  {MARK}: not read: {host.unreadable}"
    tree.lines.append(head)
    last = _counter(len(host.labels) + len(host.bridges) + len(host.loose_guests))
    for text, resource in host.labels:
        tree.add("", last(), text + _drift(resource))
    for bridge in host.bridges:
        _bridge(tree, "", last(), bridge)
    for guest in host.loose_guests:
        tree.add("", last(), guest_line(guest) + "  (on no tap of this stack)")


def _bridge(tree: _Tree, prefix: str, is_last: bool, bridge: Bridge) -> None:
    inner = tree.add(prefix, is_last, bridge_line(bridge))
    last = _counter(len(bridge.labels) + len(bridge.taps))
    for text, resource in bridge.labels:
        tree.add(inner, last(), text + _drift(resource))
    for tap in bridge.taps:
        below = tree.add(inner, last(), tap_line(tap))
        for k, guest in enumerate(tap.guests):
            tree.add(below, k == len(tap.guests) - 1, guest_line(guest))


def render_text(picture: Picture) -> str:
    tree = _Tree()
    kind = "state and live reads" if picture.live else "state only"
    tree.lines.append(f"stack {picture.stack}  ({len(picture.hosts)} hosts, {kind})")
    for host in picture.hosts:
        _host(tree, host, picture.live)
    if picture.live:
        drifted = picture.drifted()
        unread = [h for h in picture.hosts if h.unreadable]
        if drifted or unread:
            tree.lines.append(f"drift: {len(drifted)} resources, {len(unread)} hosts not read")
            for r in drifted:
                tree.lines.append(f"  {r.kind} {r.name} on {r.host}: {'; '.join(r.drift)}")
        else:
            tree.lines.append("no drift: every resource is on its host as the state says")
    return "\n".join(tree.lines) + "\n"
