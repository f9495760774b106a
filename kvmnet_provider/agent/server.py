"""The agent's main loop: JSON requests in on stdin, JSON answers out on stdout.

One agent process serves one controller for as long as its SSH channel lives, so each
kernel change costs a netlink call, not an SSH session. Every answer echoes its request's id:
quick operations are answered by the main thread in order, while operations that wait (guests,
uplinks: see workers.py) run beside it and answer when they are done, so one guest's power-down
holds up neither the other guests nor the host's links.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import platform
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any

from ..spec import validate
from ..spec.validate import InvalidInput
from ..spec.wire import (
    PROTOCOL,
    Answer,
    Args,
    ErrorBody,
    HelloLine,
    ItemOutcome,
    answered,
    error_body,
    refused,
)
from . import boot, workers
from .boot.records import is_mutation
from .errors import AgentError
from .links.readcache import note_request

COMPONENTS = {
    "pyroute2": "pip install pyroute2 (or apt-get install python3-pyroute2)",
    "iptc": "pip install python-iptables (it needs libiptc: apt-get install iptables)",
}

Handler = Callable[[Args], Any]
Send = Callable[[Answer | HelloLine], None]
# Operations whose module loads at their first use: most sessions never start a guest or
# bridge an uplink, and compiling those modules is most of the agent's own start-up.
LAZY_MODULES = {"guest": "guests", "uplink": "uplink", "dhcp": "dhcp", "network": "verify"}
LAZY_MODULES["adopted"] = "uplink"  # an adopted bridge's addresses: under the uplink's rollback
# Link changes (links/ops.py) and link reads (link.read*) both go without pyroute2.
LAZY_MODULES.update({op: "links" for op in ("link", "bridge", "tap")})
# Firewall ops (masquerade.*, dnat.*, forward.*, input.*, firewall.*) go through the backend
# the host uses (firewall/backend.py), loaded at the first rule operation.
FIREWALL_KINDS = ("masquerade", "dnat", "forward", "input", "firewall")
LAZY_MODULES.update({op: "firewall" for op in FIREWALL_KINDS})


def missing_components() -> list[str]:
    # find_spec, not import: importing iptc is slow, and a session may make no rule
    # (see firewall/loading.load).
    missing = []
    for module, how in COMPONENTS.items():
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} (not installed); install with: {how}")
    if os.geteuid() != 0:
        missing.append("root privileges (connect as root or set sudo=true for a sudoer)")
    return missing


def boot_kind() -> str:
    """What brings this host's objects back at boot (see boot/unit.py)."""
    from .boot import unit

    try:
        return unit.host_kind()
    except OSError:
        return "no-systemd"


def build_handlers() -> dict[str, Handler]:
    from .firewall import forwarding
    from .links.dump import link_read, link_read_all, link_read_many

    return {
        "ping": lambda a: {"pid": os.getpid()},
        "link.read": lambda a: link_read(a["name"]),
        "link.read.many": lambda a: outcomes("link.read", link_read_many(a["items"])),
        "link.read.all": lambda a: link_read_all(),
        # Callers that asked at the same time share one listing.
        "link.read.all.many": lambda a: outcomes(
            "link.read.all", [link_read_all()] * len(a["items"])
        ),
        "forwarding.read": lambda a: forwarding.read(a["owner"]),
        "forwarding.acquire": forwarding.acquire,
        "forwarding.release": lambda a: forwarding.release(a["owner"]),
        # Nothing on the host changes: the books drop the owner's records (boot/records.py).
        "boot.forget": lambda a: {"owner": validate.owner(a["owner"])},
    }


def handler_for(handlers: dict[str, Handler], op: str) -> Handler | None:
    """The handler for `op`, loading its module at the first operation that needs it."""
    module = LAZY_MODULES.get(op.split(".")[0])
    if op not in handlers and module:
        handlers.update(importlib.import_module(f".{module}", __package__).handlers())
    return handlers.get(op)


_handler = handler_for


def failure(op: object, exc: BaseException) -> ErrorBody:
    """The wire form of an operation's error."""
    if isinstance(exc, AgentError):
        return exc.to_wire()
    if isinstance(exc, InvalidInput):
        return error_body("invalid", str(exc))
    if isinstance(exc, KeyError):
        return error_body("invalid", f"missing argument {exc}")
    # The kernel said no: report it, keep serving.
    traceback.print_exception(exc, file=sys.stderr)
    return error_body("failed", f"{op}: {exc}")


def outcomes(op: str, results: list[Any]) -> list[ItemOutcome]:
    """Per-item answers of a batched operation: a result, or the exception raised for it."""
    return [
        {"ok": False, "error": failure(op, r)}
        if isinstance(r, Exception)
        else {"ok": True, "result": r}
        for r in results
    ]


def handle(handlers: dict[str, Handler], request: dict[str, Any]) -> Answer:
    """Answer one request line's object (not yet checked: a bad one is answered as such)."""
    rid = request.get("id")
    rid = rid if isinstance(rid, int) else None
    op = request.get("op")
    note_request(op)  # a request that may change the host ends reads from the last dump
    try:
        handler = _handler(handlers, op) if isinstance(op, str) else None
        if handler is None:
            raise AgentError("invalid", f"unknown operation {op!r}")
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise AgentError("invalid", "args must be an object")
        # Whether the object comes back after a reboot: the books' business, not the op's.
        autostart = args.pop("autostart", True) is not False
        result = handler(args)
        if isinstance(op, str) and (is_mutation(op) or not autostart):  # see boot/
            boot.book(op, args, result, autostart)
        return answered(rid, result)
    except Exception as exc:
        return refused(rid, failure(op, exc))


def line_writer(out: IO[str]) -> Send:
    """Send each document as one line of `out`; workers answer too, so one line at a time."""
    lock = threading.Lock()

    def send(doc: Answer | HelloLine) -> None:
        line = json.dumps(doc) + "\n"
        with lock:
            out.write(line)
            out.flush()

    return send


def serve(inp: IO[str], out: IO[str]) -> None:
    send = line_writer(out)
    missing = missing_components()
    send(
        {
            "hello": {
                "protocol": PROTOCOL,
                "python": platform.python_version(),
                "pid": os.getpid(),
                "missing": missing,
                "boot": boot_kind(),
            }
        }
    )
    if missing:
        return
    serve_requests(inp, send, build_handlers())


def serve_requests(inp: IO[str], send: Send, handlers: dict[str, Handler]) -> None:
    """Answer each request line of `inp` until it ends, then let the workers finish."""
    pool = workers.KeyedWorkers()
    try:
        for line in inp:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except json.JSONDecodeError:
                request = None
            if not isinstance(request, dict):
                send(refused(None, error_body("invalid", "bad JSON")))
                continue
            op = request.get("op")
            if not workers.waits(op):
                send(handle(handlers, request))
                continue
            try:  # a module's first load stays on this thread, and what its workers import
                _handler(handlers, op)
                workers.preload(op.split(".", 1)[0])
            except Exception:
                pass  # handle() reports it, to that request only
            pool.submit(
                workers.object_key(op, request.get("args")),
                workers.guarded(send, functools.partial(handle, handlers, request)),
            )
    finally:
        pool.drain()


def main() -> None:
    # stdout is the protocol channel: anything else printed goes to stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    serve(sys.stdin, protocol_out)
