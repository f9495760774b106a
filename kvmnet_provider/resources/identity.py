"""Owner marks written on the host: one per resource, never shared by two.

A mark must fit the agent's rule (1-200 characters of [A-Za-z0-9_.:/@+=-]) and be
injective: replacing every other character with "_" made "br x" and "br_x" one owner, and
cutting at 200 made two long names one owner. So "=" escapes (=XX per UTF-8 byte, "=" itself
too) and a mark that would be too long keeps its head and ends with "==" and a hash of the
whole; "==" never occurs in an escaped mark (an "=" is always followed by two hex digits).
The raw form is `project/stack@STACKID/Kind/name`, or without `@STACKID` for a resource made
before stack ids (see spec/marks.py).
"""

from __future__ import annotations

import hashlib
import re

from ..spec.marks import STACK_ID

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


def stack_owner_mark(project: str, stack: str, stack_id: str, kind: str, name: str) -> str:
    """The mark of a resource made since stack ids (spec/marks.py): the stack's id follows its
    name, so two stacks of the same project and stack name never share one."""
    if not STACK_ID.fullmatch(stack_id):
        raise ValueError(f"not a stack id: {stack_id!r}")
    return owner_mark(f"{project}/{stack}@{stack_id}/{kind}/{name}")


def legacy_owner_mark(project: str, stack: str, kind: str, name: str) -> str:
    """The mark the same resource had before stack ids: a resource whose state holds it keeps
    it (the provider's check), so an upgrade changes nothing on the host."""
    return owner_mark(f"{project}/{stack}/{kind}/{name}")
