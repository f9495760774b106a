"""How kvmnet marks what it makes on a host, so it finds its own and leaves everything else.

A link's ifalias, and a firewall rule's comment, is OWNER_PREFIX + the owner
(`project/stack/Kind/name`); the jumps into kvmnet's chains, shared by every owner, carry
JUMP_MARK.
"""

from __future__ import annotations

OWNER_PREFIX = "kvmnet:"
JUMP_MARK = "kvmnet"
