"""How kvmnet marks what it makes on a host, so it finds its own and leaves everything else.

A link's ifalias, and a firewall rule's comment, is OWNER_PREFIX + the owner; the jumps into
kvmnet's chains, shared by every owner, carry JUMP_MARK. An owner is
`project/stack@STACKID/Kind/name`: STACKID is the stack's own random id, kept in its state
(resources/stack_identity.py), so two stacks of the same project and stack name (another
backend, another organisation) never share a mark. Objects made before stack ids keep
`project/stack/Kind/name`. Project and stack names hold neither "/" nor "@".
"""

from __future__ import annotations

import re

OWNER_PREFIX = "kvmnet:"
JUMP_MARK = "kvmnet"
STACK_ID = re.compile(r"[0-9a-f]{16}")
_STACK_PART = re.compile(r"^([^/@]+/[^/@]+)(?:@([0-9a-f]{16}))?(?=/|==|$)")


def stack_of(mark: str) -> tuple[str, str | None]:
    """(project/stack, its stack id or None for a mark made before stack ids) of an owner
    mark; ("", None) for one of another shape."""
    found = _STACK_PART.match(mark)
    return (found.group(1), found.group(2)) if found else ("", None)


def without_stack_id(mark: str) -> str:
    """The mark as it was before stack ids: what the ids of kvmnet's resources name."""
    found = _STACK_PART.match(mark)
    if found is None or found.group(2) is None:
        return mark
    return found.group(1) + mark[found.end() :]
