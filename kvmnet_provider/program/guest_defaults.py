"""A stack-config guest's default tap name and MAC, from who the guest is, not where it is listed.

A default by position (`vif<N>.0`) would move every later guest's tap and MAC when one is
removed or renamed: the moved guest would want a tap its old resource still holds (Pulumi
creates before it deletes), and two stacks' guests would take the same names. These depend only
on the guest's name (and, for the MAC, its stack and network), so other guests coming and going
change nothing.

tap  `vm-<name>` when the name has at most 11 characters (a tap of at most 14), else
     `vm-<the name's first 5 characters>-<6 hex digits of SHA-256 of the whole name>`, exactly
     15 (Linux's limit). The two forms never meet (14 or fewer against 15), and guest names
     use only characters interface names allow. Guest names are unique per host, so their
     default taps are too (a long name's hash may collide: preview names it, set `tap`).
MAC  52:54:00 (QEMU's prefix: locally administered, unicast) and 3 bytes of SHA-256 of the
     Pulumi project, the stack, the network's scope (`kvmnet:guests`, or for the fleet
     `kvmnet:hosts.<host>.networks.<network name>.guests`) and the guest's name: it differs
     between stacks and networks sharing a LAN, and stays when other guests or networks come
     and go.
"""

from __future__ import annotations

import hashlib

TAP_PREFIX = "vm-"
SHORT_NAME = 11  # longest name used whole: its tap has 14 characters, a hashed one always 15
NAME_HEAD = 5  # characters of a long name kept readable in its tap
TAP_HASH = 6  # hex digits of the long name's hash
MAC_PREFIX = "52:54:00"


def default_tap(guest_name: str) -> str:
    """The tap name of a guest that does not set `tap`."""
    if len(guest_name) <= SHORT_NAME:
        return f"{TAP_PREFIX}{guest_name}"
    digest = hashlib.sha256(guest_name.encode()).hexdigest()[:TAP_HASH]
    return f"{TAP_PREFIX}{guest_name[:NAME_HEAD]}-{digest}"


def default_mac(project: str, stack: str, scope: str, guest_name: str) -> str:
    """The MAC of a guest that does not set `mac` (scope: its network's, see above)."""
    # NUL between the parts: no two different tuples give the same bytes.
    identity = "\0".join((project, stack, scope, guest_name)).encode()
    tail = hashlib.sha256(identity).digest()[:3]
    return ":".join([MAC_PREFIX, *(f"{byte:02x}" for byte in tail)])
