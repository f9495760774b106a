"""The start of the agent's stream: whatever the login shell printed, then our marker.

A `.bashrc` that prints (a banner, `echo`, a `motd` script) writes into the same stdout as
the agent, before it. The bootstrap prints a marker of the controller's choosing before the
agent's hello, so everything up to the marker is skipped, and reported once, not parsed.
"""

from __future__ import annotations

import logging
import secrets
from typing import Protocol

MAX_PREAMBLE_LINES = 1000
log = logging.getLogger("kvmnet")


class LineReader(Protocol):
    def readline(self) -> str | bytes: ...


def new_marker() -> str:
    return "kvmnet-agent-" + secrets.token_hex(16)


def skip_preamble(stream: LineReader, marker: str, label: str) -> list[str]:
    """Read up to and including the marker line; the lines before it. Stops at end of stream
    (the bootstrap died: the caller's next read reports why) or after too many lines."""
    skipped: list[str] = []
    while len(skipped) < MAX_PREAMBLE_LINES:
        raw = stream.readline()
        line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if not line or line.rstrip("\r\n") == marker:
            break
        skipped.append(line.rstrip("\r\n"))
    if skipped:
        shown = " | ".join(skipped[:3])[:300]
        log.warning(
            "%s: skipped %d line(s) the login shell printed before the kvmnet agent: %s",
            label,
            len(skipped),
            shown,
        )
    return skipped
