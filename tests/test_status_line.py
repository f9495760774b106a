"""A resource's status line from the dynamic-provider server: the URN read from the serving
call's request, the message sent to an engine stand-in (a real gRPC Engine service), and no
status line wherever one of them is missing, so the caller falls back to log lines."""

from __future__ import annotations

import re
import sys
import traceback
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pulumi
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, provider_pb2

from kvmnet_provider import status_line

SERVER = Path(pulumi.__file__).parent / "dynamic" / "__main__.py"
URN = "urn:pulumi:dev::kvt::kvmnet:index:NatNetwork$pulumi-python:dynamic:Resource::g1"

# As the SDK's server serves a call: the provider runs inside Create(self, request, context).
SERVING = """
def Create(self, request, context):
    return self.provider(request)

def Update(self, request, context):
    return self.provider(request)
"""


class Engine(engine_pb2_grpc.EngineServicer):
    def __init__(self) -> None:
        self.logged: list[engine_pb2.LogRequest] = []

    def Log(self, request: engine_pb2.LogRequest, context: Any) -> empty_pb2.Empty:
        self.logged.append(request)
        return empty_pb2.Empty()


@pytest.fixture
def server() -> Iterator[types.ModuleType]:
    """This process looks like `python -m pulumi.dynamic`; its module serves Create/Update."""
    module = types.ModuleType("pulumi.dynamic.__main__")
    module._abort_with_traceback = lambda fn: fn  # type: ignore[attr-defined]
    module.traceback = traceback  # type: ignore[attr-defined]
    exec(SERVING, vars(module))  # noqa: S102 -- the functions' globals are the module's
    sys.modules["pulumi.dynamic.__main__"] = module
    try:
        yield module
    finally:
        del sys.modules["pulumi.dynamic.__main__"]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    service = Engine()
    grpc_server = grpc.server(ThreadPoolExecutor(max_workers=2))
    engine_pb2_grpc.add_EngineServicer_to_server(service, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    monkeypatch.setattr(sys, "argv", ["pulumi/dynamic/__main__.py", f"127.0.0.1:{port}"])
    try:
        yield service
    finally:
        grpc_server.stop(0)


class Servicer:
    def __init__(self, provider: Any) -> None:
        self.provider = provider


def serve(server: types.ModuleType, call: str, provider: Any) -> Any:
    request = provider_pb2.CreateRequest(urn=URN)
    return getattr(server, call)(Servicer(provider), request, None)


def test_the_sdk_still_serves_create_and_update_with_the_engines_request() -> None:
    """When the SDK changes these, serving_urn() finds no URN and progress stays a log line:
    this test says so first."""
    source = SERVER.read_text()
    for call in status_line.SERVING_CALLS:
        assert re.search(rf"def {call}\(self, request, context\):", source), call
    assert provider_pb2.CreateRequest(urn=URN).urn == provider_pb2.UpdateRequest(urn=URN).urn


@pytest.mark.parametrize("call", status_line.SERVING_CALLS)
def test_a_status_reaches_the_engine_on_the_resources_row(
    server: types.ModuleType, engine: Engine, call: str
) -> None:
    def provider(_request: Any) -> None:
        say = status_line.status_line()
        assert say is not None
        say("guest g1: waiting for a DHCP lease (0 s of 300 s)")

    serve(server, call, provider)
    (logged,) = engine.logged
    assert logged.urn == URN and logged.ephemeral and logged.severity == engine_pb2.INFO
    assert logged.message == "guest g1: waiting for a DHCP lease (0 s of 300 s)"


def test_outside_a_serving_call_there_is_no_status_line(
    server: types.ModuleType, engine: Engine
) -> None:
    assert status_line.serving_urn() is None and status_line.status_line() is None
    with ThreadPoolExecutor(max_workers=1) as own:  # nor on a thread of the provider's own
        elsewhere = serve(server, "Create", lambda _r: own.submit(status_line.status_line))
        assert elsewhere.result(timeout=10) is None


def test_outside_the_server_there_is_no_status_line(engine: Engine) -> None:
    def Create(request: Any) -> str | None:  # noqa: N802 -- a namesake, not the server's
        return status_line.serving_urn()

    assert Create(provider_pb2.CreateRequest(urn=URN)) is None
    assert status_line.status_line() is None


def test_without_the_engines_address_there_is_no_status_line(server: types.ModuleType) -> None:
    def provider(_request: Any) -> tuple[str | None, Any]:
        return status_line.serving_urn(), status_line.status_line()

    for argv in (["__main__.py"], ["__main__.py", "--logtostderr"]):
        sys.argv, kept = argv, sys.argv
        try:
            assert serve(server, "Create", provider) == (URN, None)
        finally:
            sys.argv = kept
    assert status_line.engine_address(["m", "-v=9", "127.0.0.1:40123"]) == "127.0.0.1:40123"


def test_an_engine_that_does_not_answer_gets_a_log_line(
    server: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    monkeypatch.setattr(pulumi.log, "info", lines.append)
    monkeypatch.setattr(sys, "argv", ["__main__.py", "127.0.0.1:1"])  # nothing listens

    def provider(_request: Any) -> None:
        say = status_line.status_line()
        assert say is not None
        say("guest g1: waiting")

    serve(server, "Create", provider)
    assert lines == ["guest g1: waiting"]
