"""The agent protocol's shapes: one JSON object a line, each way.

The provider writes a Request; the agent answers with an Answer of the same id: `ok` and a
`result`, or not `ok` and an ErrorBody. The agent's first line is a HelloLine. Operations'
own arguments and results are typed where both sides share them (the guest operations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NotRequired, TypedDict, get_args

PROTOCOL = 1

#: invalid: a bad request; conflict: an object exists that is not ours; missing: the host
#: lacks a component or an object; blocked: a rule of the host's own firewall drops what
#: kvmnet's rules would accept; failed: the kernel or QEMU refused.
ErrorKind = Literal["invalid", "conflict", "missing", "blocked", "failed"]
ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)

Args = dict[str, Any]  # an operation's own arguments (a JSON object)
Handlers = dict[str, Callable[[Args], Any]]  # the agent's operations, by name


class Request(TypedDict):
    id: int
    op: str
    args: Args


class ErrorBody(TypedDict):
    kind: ErrorKind
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
    # How the host brings kvmnet's objects back at boot: "unit" (systemd), "lab" (a network
    # namespace: the lab runs the restore), "no-systemd" (nothing does); "" from an older agent.
    boot: NotRequired[str]


class HelloLine(TypedDict):
    hello: Hello


class NeedLine(TypedDict):
    """The host's bootstrap, in place of a hello: it lacks the agent code of this digest."""

    need: str


class ItemOutcome(TypedDict):
    """One item's answer inside a batched (`<op>.many`) answer."""

    ok: bool
    result: NotRequired[Any]
    error: NotRequired[ErrorBody]


def error_body(kind: ErrorKind, message: str) -> ErrorBody:
    return {"kind": kind, "message": message}


def request(rid: int, op: str, args: Args) -> Request:
    return {"id": rid, "op": op, "args": args}


def answered(rid: int | None, result: Any) -> Answer:
    return {"id": rid, "ok": True, "result": result}


def refused(rid: int | None, error: ErrorBody) -> Answer:
    return {"id": rid, "ok": False, "error": error}


def _error_of(doc: object) -> ErrorBody:
    """An answer's error, its kind one of ERROR_KINDS ("failed" for any other)."""
    body = doc if isinstance(doc, dict) else {}
    kind = body.get("kind")
    fallback: ErrorKind = "failed"
    known = next((k for k in ERROR_KINDS if k == kind), fallback)
    return error_body(known, str(body.get("message", "the host agent gave no reason")))


def parse_answer(doc: object) -> Answer:
    """An answer line's object as an Answer; ValueError when it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        raise ValueError(f"an answer must be a JSON object with ok, got {doc!r:.80}")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, int):
        raise ValueError(f"an answer's id must be a number, got {rid!r:.40}")
    if doc["ok"]:
        return answered(rid, doc.get("result"))
    return refused(rid, _error_of(doc.get("error")))


def parse_item(doc: object) -> ItemOutcome:
    """One item of a batched answer; ValueError when it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        raise ValueError(f"a batched answer's item must have ok, got {doc!r:.80}")
    if doc["ok"]:
        return {"ok": True, "result": doc.get("result")}
    return {"ok": False, "error": _error_of(doc.get("error"))}


def parse_hello(doc: object) -> Hello:
    """The agent's hello; ValueError when the line is not one."""
    hello = doc.get("hello") if isinstance(doc, dict) else None
    if not isinstance(hello, dict):
        raise ValueError(f"the host agent's first line must be its hello, got {doc!r:.80}")
    missing = hello.get("missing") or []
    return {
        "protocol": int(hello.get("protocol") or 0),
        "python": str(hello.get("python") or ""),
        "pid": int(hello.get("pid") or 0),
        "missing": [str(m) for m in missing] if isinstance(missing, list) else [str(missing)],
        "boot": str(hello.get("boot") or ""),
    }


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
    # taps made again since QEMU opened them: the guest is cut off until it is restarted
    replaced_taps: list[str]


class GuestStopped(TypedDict):
    deleted: bool
    how: str  # powered down, quit over QMP, SIGTERM, SIGKILL, not running, absent
    kept_disk: NotRequired[str]  # the overlay keep_disk left on the host, when it did


class AcceleratorChoice(TypedDict):
    accelerator: str  # kvm or tcg
    reason: str
