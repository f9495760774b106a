"""The agent protocol's shapes: one JSON object a line, each way.

The provider writes a Request; the agent answers with an Answer of the same id: `ok` and a
`result`, or not `ok` and an ErrorBody. The agent's first line is a HelloLine. Operations'
own arguments and results are typed where both sides share them (the guest operations).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

PROTOCOL = 1

#: invalid: a bad request; conflict: an object exists that is not ours; missing: the host
#: lacks a component or an object; failed: the kernel or QEMU refused.
ErrorKind = Literal["invalid", "conflict", "missing", "failed"]


class Request(TypedDict):
    id: int
    op: str
    args: dict[str, Any]


class ErrorBody(TypedDict):
    kind: str  # an ErrorKind
    message: str


class Answer(TypedDict):
    id: int | None
    ok: bool
    result: NotRequired[Any]
    error: NotRequired[ErrorBody]


class Hello(TypedDict):
    protocol: int
    python: str
    pid: int
    missing: list[str]  # what the host lacks, each with how to install it; empty: ready


class HelloLine(TypedDict):
    hello: Hello


class ItemOutcome(TypedDict):
    """One item's answer inside a batched (`<op>.many`) answer."""

    ok: bool
    result: NotRequired[Any]
    error: NotRequired[ErrorBody]


# --- guest operations ------------------------------------------------------------------------
class GuestRef(TypedDict):
    """guest.read's arguments; guest.stop's, with stop_timeout and keep_disk."""

    name: str
    owner: str
    stop_timeout: NotRequired[int]
    keep_disk: NotRequired[bool]  # leave the overlay made from base_image (the seed goes)


class GuestState(TypedDict):
    """What guest.start and guest.read report of a running guest."""

    pid: int
    status: str
    accelerator: str
    accelerator_reason: str
    console_socket: str
    console_log: str
    qmp_socket: str
    macs: list[str]
    run_dir: str
    argv_sha256: str
    disk_path: str | None  # the overlay made from base_image
    seed_path: str | None  # the cloud-init seed ISO


class GuestStopped(TypedDict):
    deleted: bool
    how: str  # powered down, quit over QMP, SIGTERM, SIGKILL, not running, absent
    kept_disk: NotRequired[str]  # the overlay keep_disk left on the host, when it did


class AcceleratorChoice(TypedDict):
    accelerator: str  # kvm or tcg
    reason: str
