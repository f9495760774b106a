"""Waiting for a guest to be ready, and its addresses: the provider's side of guest.probe.

The wait is a loop of short probes (agent/guests/ready.py), a second or two apart: each is
one quick request, so the host's session keeps serving the other guests, which wait side by
side (the engine creates independent resources in parallel). While it waits, progress is the
guest's status in `pulumi up` (its row), or a log line every PROGRESS_SECONDS where the
provider cannot reach its row (status_line.py); past the timeout the wait fails in one line
naming the guest, what it waited for, what was missing and the console's last line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi

from ..errors import KvmnetError
from ..spec.ready import DEFAULT_TIMEOUT, Readiness, describe
from ..status_line import status_line

POLL_SECONDS = 2.0
PROGRESS_SECONDS = 15.0
PROBE_TIMEOUT = 30.0

Probe = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Progress:
    """How the wait says how it is going: `say`, from `first` s into the wait, again when
    what is missing changes and every `every` s."""

    say: Callable[[str], None]
    first: float
    every: float


def progress() -> Progress:
    """The guest's row status from the start; else log lines, from PROGRESS_SECONDS on (a
    status is replaced in place, a log line is kept). Not every probe: where the output is
    not a terminal, the engine prints the row again each time its status changes."""
    status = status_line()
    if status is not None:
        return Progress(status, 0.0, PROGRESS_SECONDS)
    return Progress(pulumi.log.info, PROGRESS_SECONDS, PROGRESS_SECONDS)


def probe_args(props: dict[str, Any], ready: Readiness | None) -> dict[str, Any]:
    args: dict[str, Any] = {"name": props["name"], "owner": props["owner"]}
    if ready is not None:
        args.update(tcp=ready["tcp"], console=ready["console"], address=ready["address"])
    return args


def missing(ready: Readiness, seen: dict[str, Any]) -> list[str]:
    """What of `ready` the probe did not see yet, in words."""
    out = []
    if ready["lease"] and not seen.get("leased"):
        out.append("a DHCP lease")
    if ready["tcp"] is not None and not seen.get("tcp"):
        where = seen.get("tcp_address")
        out.append(f"tcp port {ready['tcp']}" + (f" on {where}" if where else " (no address yet)"))
    if ready["console"] is not None and not seen.get("console"):
        out.append(f"console /{ready['console']}/")
    return out


def failure_line(name: str, host: str, ready: Readiness, seen: dict[str, Any]) -> str:
    last = seen.get("last_line") or "(nothing yet)"
    return (
        f"guest {name} on {host} was not ready within {ready['timeout']} s: waited for "
        f"{describe(ready)}, still missing {', '.join(missing(ready, seen))}; last console "
        f"line: {last!r}; see its console log, or raise ready.timeout"
    )


def wait_ready(
    probe: Probe,
    props: dict[str, Any],
    ready: Readiness,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    tell: Progress | None = None,
) -> dict[str, Any]:
    """Probe until every part of `ready` holds; the last probe's answer."""
    name, host = props["name"], props["connection"]["host"]
    args = probe_args(props, ready)
    tell = tell or progress()
    start = clock()
    deadline = start + ready["timeout"]
    next_word = start + tell.first
    said_lacking: list[str] = []
    while True:
        seen = probe(args)
        if not seen.get("running"):
            raise KvmnetError(
                f"guest {name} on {host} stopped while `up` waited for {describe(ready)}; "
                f"last console line: {seen.get('last_line') or '(none)'!r}"
            )
        lacking = missing(ready, seen)
        if not lacking:
            return seen
        now = clock()
        if now >= deadline:
            raise KvmnetError(failure_line(name, host, ready, seen))
        if now >= next_word or (lacking != said_lacking and now >= start + tell.first):
            next_word, said_lacking = now + tell.every, lacking
            tell.say(
                f"guest {name}: waiting for {', '.join(lacking)} "
                f"({int(now - start)} s of {ready['timeout']} s)"
            )
        sleep(max(0.0, min(POLL_SECONDS, deadline - now)))


def addresses(seen: dict[str, Any] | None) -> list[str]:
    return list((seen or {}).get("addresses") or [])


@dataclass
class GuestReady:
    """What `up` waits for before a guest counts as made (any of lease, tcp, console)."""

    lease: bool = False  # the guest holds a DHCP lease on its host
    tcp: int | None = None  # this port answers on the guest's address, tried from the host
    console: str | None = None  # a regular expression found in the guest's console log
    timeout: int = DEFAULT_TIMEOUT  # seconds; past it `up` fails naming what was missing
    address: str | None = None  # where tcp is tried (default: its reservation or lease)


def ready_prop(value: GuestReady | dict[str, Any]) -> dict[str, Any]:
    raw = dataclasses.asdict(value) if isinstance(value, GuestReady) else dict(value)
    return {k: v for k, v in raw.items() if v is not None}


def with_address(
    value: GuestReady | dict[str, Any] | None, address: str | None
) -> GuestReady | dict[str, Any] | None:
    """A declared guest's readiness tries tcp on its declared address unless it names one."""
    if value is None or address is None:
        return value
    raw = ready_prop(value)
    if raw.get("tcp") is None or raw.get("address"):
        return value
    return {**raw, "address": address}
