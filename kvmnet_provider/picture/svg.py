"""A Picture as SVG text, in layers: one box per host, stacked; in it its bridges side by side,
each with its labels (DHCP, NAT, port forwards) below it, its taps in a row below those and
each tap's guests below the tap. What drifted is drawn red and dashed, with what the live
read found written in it; every box's tooltip (`<title>`) names its resource."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from .state import Bridge, Guest, Picture, Resource, Tap
from .text import MARK

COLUMN = 180  # a tap's column
PAD = 10
LINE = 15  # a text line's height
TITLE_CHAR = 8.6  # in the 14px bold title
CHAR = 7.3  # a character's width in the 12px monospace font, about
GAP = 18  # between layers
OK_STROKE, DRIFT_STROKE = "#37474f", "#c62828"
FILLS = {"host": "#f5f7fa", "bridge": "#e3f2fd", "tap": "#fff8e1", "guest": "#e8f5e9"}


@dataclass
class _Canvas:
    parts: list[str] = field(default_factory=list)

    def text(self, x: float, y: float, value: str, width: float, style: str = "") -> None:
        fits = max(4, int(width / CHAR))
        if len(value) > fits:
            value = value[: fits - 1] + "…"
        extra = f" {style}" if style else ""
        self.parts.append(f'<text x="{x:.0f}" y="{y:.0f}"{extra}>{escape(value)}</text>')

    def line(self, x1: float, y1: float, x2: float, y2: float) -> None:
        self.parts.append(
            f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" class="wire"/>'
        )

    def box(
        self,
        kind: str,
        x: float,
        y: float,
        width: float,
        lines: list[str],
        resource: Resource | None,
        notes: Sequence[tuple[str, Resource]] = (),
    ) -> float:
        """A box of `lines` (the first one bold), then `notes` (labels of other resources,
        each with its own drift), then the resource's drift; its height."""
        drift = list(resource.drift) if resource is not None else []
        rows: list[tuple[str, str]] = [(v, 'class="name"' if i == 0 else "") for i, v in
                                       enumerate(lines)]  # fmt: skip
        for text, other in notes:
            rows.append((text, 'class="label mark"' if other.drift else 'class="label"'))
            rows += [(f"  ✗ {value}", 'class="mark"') for value in other.drift]
        rows += [(f"✗ {value}", 'class="mark"') for value in drift]
        height = len(rows) * LINE + PAD
        css = f"{kind} drift" if drift else kind
        title = f"<title>{escape(resource.urn)}</title>" if resource is not None else ""
        self.parts.append(f"<g class={quoteattr(css)}>{title}")
        self.parts.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{width:.0f}" height="{height:.0f}" rx="5"/>'
        )
        for i, (value, style) in enumerate(rows):
            self.text(x + 6, y + (i + 1) * LINE, value, width - 12, style)
        self.parts.append("</g>")
        return height


def _guest_lines(guest: Guest) -> list[str]:
    pid = f" pid {guest.pid}" if guest.pid is not None else ""
    return [f"guest {guest.name}", ", ".join(guest.addresses) or "no address yet",
            f"{guest.status}{pid}"]  # fmt: skip


def _bridge_lines(bridge: Bridge) -> list[str]:
    head = f"bridge {bridge.name}" + (f" [{bridge.model}]" if bridge.model else "")
    lines = [head, ", ".join(bridge.addresses) or "no address"]
    if bridge.uplink:
        lines.append(f"uplink {bridge.uplink}")
    if bridge.resource is None:
        lines.append("(not in this stack)")
    return lines


def _bridge_width(bridge: Bridge) -> float:
    """Its taps' columns, or wide enough for its text (up to three columns)."""
    texts = _bridge_lines(bridge) + [text for text, _ in bridge.labels]
    wanted = max(len(t) for t in texts) * CHAR + 12 + PAD
    return max(max(1, len(bridge.taps)) * COLUMN, min(wanted, 3 * COLUMN))


def _draw_taps(canvas: _Canvas, x: float, top: float, under: float, taps: list[Tap]) -> float:
    """The taps in a row from `top`, wired up to `under` (the bridge's bottom), and each
    tap's guests below it; the height used."""
    tallest = 0.0
    for i, tap in enumerate(taps):
        left = x + i * COLUMN
        middle = left + (COLUMN - PAD) / 2
        canvas.line(middle, under, middle, top)
        height = canvas.box("tap", left, top, COLUMN - PAD, [f"tap {tap.name}"], tap.resource)
        y = top + height
        for guest in tap.guests:
            canvas.line(middle, y, middle, y + GAP)
            y += GAP
            y += canvas.box("guest", left, y, COLUMN - PAD, _guest_lines(guest), guest.resource)
        tallest = max(tallest, y - top)
    return tallest


def _draw_bridge(canvas: _Canvas, x: float, y: float, bridge: Bridge) -> float:
    width = _bridge_width(bridge) - PAD
    lines = _bridge_lines(bridge)
    height = canvas.box("bridge", x, y, width, lines, bridge.resource, bridge.labels)
    if not bridge.taps:
        return height
    return height + GAP + _draw_taps(canvas, x, y + height + GAP, y + height, bridge.taps)


def _draw_loose(canvas: _Canvas, x: float, y: float, guests: list[Guest]) -> float:
    canvas.text(x + 6, y + LINE, "on no tap of this stack:", COLUMN - PAD, 'class="label"')
    at = y + LINE + 4
    for guest in guests:
        at += canvas.box("guest", x, at, COLUMN - PAD, _guest_lines(guest), guest.resource) + 6
    return at - y


STYLE = f"""
text {{ font: 12px monospace; fill: #263238; }}
text.name {{ font-weight: bold; }}
text.title {{ font: bold 14px monospace; }}
text.label {{ fill: #455a64; }}
text.mark {{ fill: {DRIFT_STROKE}; font-weight: bold; }}
rect {{ stroke: {OK_STROKE}; stroke-width: 1.2; }}
.drift > rect {{ stroke: {DRIFT_STROKE}; stroke-width: 2.5; stroke-dasharray: 6 3; }}
rect.page {{ fill: white; stroke: none; }}
line.wire {{ stroke: {OK_STROKE}; stroke-width: 1.2; }}
""" + "".join(f".{k} > rect {{ fill: {v}; }}\n" for k, v in FILLS.items())


def render_svg(picture: Picture) -> str:
    canvas = _Canvas()
    margin = 16
    width_needed = 560.0
    y = float(margin + LINE)
    drifted = picture.drifted()
    summary = "state only (no live reads)"
    if picture.live:
        unread = sum(1 for h in picture.hosts if h.unreadable)
        summary = f"live reads: {len(drifted)} drifted, {unread} hosts not read"
    title = f"kvmnet stack {picture.stack}: {summary}"
    canvas.text(margin, y, title, 2000, 'class="title"')
    width_needed = max(width_needed, len(title) * TITLE_CHAR + 2 * margin)
    y += GAP
    for host in picture.hosts:
        start = len(canvas.parts)
        x = float(margin + PAD)
        inner_top = y + LINE + PAD
        notes = [text + (f"  ✗ {'; '.join(r.drift)}" if r.drift else "") for text, r in host.labels]
        if picture.live and host.unreadable:
            notes.insert(0, f"{MARK}: not read: {host.unreadable}")
        loose = COLUMN if host.loose_guests else 0
        host_width = max(sum(map(_bridge_width, host.bridges)) + loose + PAD, 420.0)
        for i, note in enumerate(notes):
            style = 'class="label mark"' if "✗" in note or MARK in note else 'class="label"'
            canvas.text(x, inner_top + i * LINE, note, host_width - 2 * PAD, style)
        top = inner_top + len(notes) * LINE
        tallest = 0.0
        for bridge in host.bridges:
            tallest = max(tallest, _draw_bridge(canvas, x, top, bridge))
            x += _bridge_width(bridge)
        if host.loose_guests:
            tallest = max(tallest, _draw_loose(canvas, x, top, host.loose_guests))
        height = top + tallest + PAD - y
        frame = "host drift" if picture.live and host.unreadable else "host"
        canvas.parts.insert(
            start,
            f'<g class="{frame}"><rect x="{margin}" y="{y:.0f}" width="{host_width:.0f}" '
            f'height="{height:.0f}" rx="8"/></g>',
        )
        canvas.text(margin + PAD, y + LINE + 2, f"host {host.label}", host_width, 'class="name"')
        width_needed = max(width_needed, host_width + 2 * margin)
        y += height + GAP
    svg_head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width_needed:.0f}" '
        f'height="{y + margin:.0f}" viewBox="0 0 {width_needed:.0f} {y + margin:.0f}">'
    )
    body = "\n".join(canvas.parts)
    page = '<rect class="page" width="100%" height="100%"/>'
    return f"{svg_head}\n<style>{STYLE}</style>\n{page}\n{body}\n</svg>\n"
