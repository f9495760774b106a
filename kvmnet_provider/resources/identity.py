"""Owner marks written on the host: one per resource, never shared by two.

A mark must fit the agent's rule (1-200 characters of [A-Za-z0-9_.:/@+=-]) and be
injective: replacing every other character with "_" made "br x" and "br_x" one owner, and
cutting at 200 made two long names one owner. So "=" escapes (=XX per UTF-8 byte, "=" itself
too) and a mark that would be too long keeps its head and ends with "==" and a hash of the
whole; "==" never occurs in an escaped mark (an "=" is always followed by two hex digits).
"""

from __future__ import annotations

import hashlib
import re

SAFE = re.compile(r"[A-Za-z0-9_.:/@+-]")  # the agent's set without "=", the escape
MAX = 200
HASH_CHARS = 32


def escape(raw: str) -> str:
    return "".join(
        ch if SAFE.fullmatch(ch) else "".join(f"={b:02X}" for b in ch.encode()) for ch in raw
    )


def owner_mark(raw: str) -> str:
    escaped = escape(raw)
    if len(escaped) <= MAX:
        return escaped
    digest = hashlib.sha256(raw.encode()).hexdigest()[:HASH_CHARS]
    return f"{escaped[: MAX - HASH_CHARS - 2]}=={digest}"
