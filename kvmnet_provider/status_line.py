"""A status message on the row of the resource being created or updated: `pulumi up` shows it
in that resource's row while the operation runs, and keeps it out of the log.

The engine's Log call takes the resource's URN and `ephemeral` (a status, not a log line),
but Pulumi's dynamic-provider server gives the provider neither: it serves Create and Update
with the engine's request, which carries the URN, and starts no engine client (pulumi.log in
the provider has no engine and prints to stderr, which the engine shows as plain lines).
So: the URN is read from the request of the serving call's frame on this thread (the provider
runs on the thread serving the call); the engine's address is the last argument the engine
started the provider with (its host server, the one a program's pulumi.log talks to). When
either is missing (another SDK, a test, a thread of its own) there is no status line, and the
caller says its words as before.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Sequence

import grpc
import pulumi
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc

from .errors import dynamic_servers

SERVING_CALLS = ("Create", "Update")  # pulumi/dynamic/__main__.py, each with `request`
ENGINE_ADDRESS = re.compile(r"^[\w.\-\[\]:]+:\d{1,5}$")  # host:port, as the engine passes it
LOG_TIMEOUT = 5.0

_engines: dict[str, engine_pb2_grpc.EngineStub] = {}
_engines_lock = threading.Lock()


def serving_urn() -> str | None:
    """The URN of the resource the dynamic-provider server is creating or updating on this
    thread; None outside such a call."""
    server_globals = {id(vars(module)) for module in dynamic_servers()}
    frame = sys._getframe(1) if server_globals else None
    while frame is not None:
        if frame.f_code.co_name in SERVING_CALLS and id(frame.f_globals) in server_globals:
            urn = getattr(frame.f_locals.get("request"), "urn", None)
            return urn if isinstance(urn, str) and urn.startswith("urn:pulumi:") else None
        frame = frame.f_back
    return None


def engine_address(argv: Sequence[str] | None = None) -> str | None:
    """The engine's address from the provider's command line (its last argument)."""
    args = sys.argv if argv is None else argv
    last = args[-1] if len(args) > 1 else ""
    return last if ENGINE_ADDRESS.match(last) else None


def engine_at(address: str) -> engine_pb2_grpc.EngineStub:
    with _engines_lock:  # one channel per address for the provider's life
        if address not in _engines:
            _engines[address] = engine_pb2_grpc.EngineStub(grpc.insecure_channel(address))
        return _engines[address]


def status_line() -> Callable[[str], None] | None:
    """Says a message as the status of the resource this thread serves; None when it cannot
    (not in the server's Create or Update, or no engine address)."""
    urn, address = serving_urn(), engine_address()
    if urn is None or address is None:
        return None
    engine = engine_at(address)

    def say(message: str) -> None:
        request = engine_pb2.LogRequest(
            severity=engine_pb2.INFO, message=message, urn=urn, ephemeral=True
        )
        try:
            engine.Log(request, timeout=LOG_TIMEOUT)
        except grpc.RpcError:
            pulumi.log.info(message)  # the engine did not take it: a plain line still tells

    return say
