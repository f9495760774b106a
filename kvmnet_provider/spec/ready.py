"""A guest's readiness: what `up` waits for before it counts the guest as made.

`ready` holds any of `lease` (the guest holds a DHCP lease on its host), `tcp` (a port that
answers on the guest's address, tried from the host), `console` (a regular expression found
in the guest's console log) and a `timeout` in seconds; `address` says where `tcp` is tried
when the guest has neither a reservation nor a lease (a guest that configures itself).
The provider checks with these rules and the agent again; pure standard library.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

from . import validate
from .validate import InvalidInput

KINDS = ("lease", "tcp", "console")
KEYS = (*KINDS, "timeout", "address")
TIMEOUT = (1, 3600)
DEFAULT_TIMEOUT = 300
PATTERN_MAX = 500


class Readiness(TypedDict):
    lease: bool
    tcp: int | None
    console: str | None
    timeout: int
    address: str | None


def pattern(value: object) -> str:
    """A regular expression Python's `re` compiles, searched line by line."""
    if not isinstance(value, str) or not value or len(value) > PATTERN_MAX:
        raise InvalidInput(f"must be a regular expression of 1-{PATTERN_MAX} characters")
    if "\n" in value:
        raise InvalidInput("must fit on one line (the console log is searched line by line)")
    try:
        re.compile(value)
    except re.error as exc:
        raise InvalidInput(f"is not a valid regular expression ({exc}): {value!r}") from None
    return value


def _sub(key: str, check: Any, value: object) -> Any:
    try:
        return check(value)
    except InvalidInput as exc:
        raise InvalidInput(f".{key} {exc}") from None


def readiness(value: object) -> Readiness:
    """{lease, tcp, console, timeout, address}, at least one of lease/tcp/console. A reason
    starts with ".key" so that the failure reads as "ready.tcp must be ..."."""
    if not isinstance(value, dict):
        raise InvalidInput(f"must be an object with any of {', '.join(KINDS)}, got {value!r}")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise InvalidInput(f".{unknown[0]} is not a kind of readiness (known: {', '.join(KEYS)})")
    lease = value.get("lease")
    tcp, console = value.get("tcp"), value.get("console")
    timeout, address = value.get("timeout"), value.get("address")
    ready: Readiness = {
        "lease": False if lease is None else _sub("lease", validate.boolean, lease),
        "tcp": None if tcp is None else _sub("tcp", validate.port, tcp),
        "console": None if console is None else _sub("console", pattern, console),
        "timeout": (
            DEFAULT_TIMEOUT
            if timeout is None
            else _sub("timeout", lambda v: validate.int_range(v, *TIMEOUT), timeout)
        ),
        "address": None if address is None else _sub("address", validate.ipv4_address, address),
    }
    if not (ready["lease"] or ready["tcp"] is not None or ready["console"] is not None):
        raise InvalidInput(f"must ask for at least one of {', '.join(KINDS)}, got {value!r}")
    return ready


def describe(ready: Readiness) -> str:
    """What is waited for, in a few words: "a DHCP lease, tcp 22, console /finished/"."""
    parts = []
    if ready.get("lease"):
        parts.append("a DHCP lease")
    if ready.get("tcp") is not None:
        parts.append(f"tcp port {ready['tcp']}")
    if ready.get("console") is not None:
        parts.append(f"console /{ready['console']}/")
    return ", ".join(parts)
