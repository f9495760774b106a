"""Expected failures reach the operator as one line, through the real engine.

Each case runs `pulumi up` (provider-level: the host, SSH, the agent) or `pulumi preview`
(program-level: the stack program's config) and asserts that the output holds the line that
names the host (or config key) and the cause, and no Python traceback nor paramiko's own
logging. The host is left as it was.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.lab import HostStatus, Lab, LabStatus
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
from kvmnet_lab.testing.stack import STACK_PROGRAM, TestStack

pytestmark = pytest.mark.e2e

VENV_PY = sys.executable
NOISE = ("Traceback", "Exception (client)", "ConnectionResetError", "Program failed with")

PROVIDER_PROGRAM = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources import *

cfg = pulumi.Config()
c = HostSettings(host=cfg.get("host") or {address!r}, port=cfg.get_int("port") or 22,
                 known_hosts=cfg.get("known_hosts") or {known_hosts!r},
                 private_key_path=cfg.get("key") or {key!r}, python=cfg.get("python") or {python!r},
                 connect_timeout=3.0)
br = Bridge("br", BridgeArgs(connection=c, name=cfg.get("bridge") or "br-err"))
if cfg.get("tap_on"):
    TapPort("tap", TapPortArgs(connection=c, name="vif-err", bridge=cfg.get("tap_on"),
                               external_bridge=True), pulumi.ResourceOptions(depends_on=[br]))
"""


def text_of(proc: Any) -> str:
    return str(proc.stdout) + str(proc.stderr)


def assert_one_line(text: str, *fragments: str) -> None:
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in:\n{text}"
    lines = [line for line in text.splitlines() if all(f in line for f in fragments)]
    assert lines, f"no line with all of {fragments} in:\n{text}"


def assert_blamed_on(text: str, resource: str, *fragments: str) -> None:
    """The engine's diagnostics name the failed resource (`<type> (<name>):`) and the error
    line under it holds the fragments."""
    lines = text.splitlines()
    under = [after for line, after in zip(lines, lines[1:], strict=False)
             if line.strip().endswith(f"{resource}:")]  # fmt: skip
    assert under, f"no diagnostics for {resource} in:\n{text}"
    assert any("error:" in line and all(f in line for f in fragments) for line in under), text


@pytest.fixture(scope="module")
def h1(lab: LabStatus) -> HostStatus:
    return lab.hosts[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, h1: HostStatus) -> Iterator[TestStack]:
    program = textwrap.dedent(PROVIDER_PROGRAM).format(
        address=h1.address, known_hosts=h1.known_hosts, key=h1.private_key, python=VENV_PY
    )
    s = TestStack(tmp_path_factory.mktemp("errors"), program, project="errs")
    try:
        yield s
    finally:
        s.remove()


@pytest.fixture
def configured(stack: TestStack) -> Iterator[Any]:
    """Set config keys for one case; removed afterwards."""
    keys: list[str] = []

    def set_config(**values: str) -> None:
        for key, value in values.items():
            stack.config(key, value)
            keys.append(key)

    yield set_config
    for key in keys:
        stack.pulumi("config", "rm", key, check=False)


@pytest.fixture
def unchanged_host(lab_api: Lab, h1: HostStatus) -> Iterator[None]:
    before = host_snapshot(lab_api, h1.namespace)
    yield
    after = host_snapshot(lab_api, h1.namespace)
    assert after == before, "\n".join(diff_snapshots(before, after))


def failed_up(stack: TestStack) -> str:
    proc = stack.up(check=False)
    text = text_of(proc)
    assert proc.returncode != 0, text
    return text


def test_unreachable(stack: TestStack, configured: Any, h1: HostStatus, unchanged_host: None):
    configured(port="1")  # nothing listens there
    text = failed_up(stack)
    assert_one_line(text, f"root@{h1.address}:1: unreachable: Connection refused", "sshd")
    assert_blamed_on(text, "kvmnet:Bridge (br)", f"root@{h1.address}:1: unreachable")


def test_timeout(stack: TestStack, configured: Any, lab: LabStatus) -> None:
    nobody = lab.lan.rsplit(".", 1)[0] + ".250"  # in the lab's LAN, owned by no one
    configured(host=nobody)
    text = failed_up(stack)
    assert_one_line(text, f"root@{nobody}:22: ", "timed out", "is the host up")


def test_host_key_unknown(
    stack: TestStack, configured: Any, h1: HostStatus, tmp_path: Path, unchanged_host: None
) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    configured(known_hosts=str(empty))
    text = failed_up(stack)
    assert_one_line(text, f"root@{h1.address}:22: host key unknown", "ssh-keyscan")


def test_host_key_changed(
    stack: TestStack, configured: Any, lab: LabStatus, tmp_path: Path, unchanged_host: None
) -> None:
    h1, h2 = lab.hosts[0], lab.hosts[1]
    other = next(
        line.split(None, 1)[1]
        for line in Path(h2.known_hosts).read_text().splitlines()
        if line.split()[0] == h2.address
    )
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"{h1.address} {other}\n")
    configured(known_hosts=str(wrong))
    text = failed_up(stack)
    assert_one_line(text, f"root@{h1.address}:22: host key CHANGED", "refusing to connect")


def test_authentication_refused(
    stack: TestStack, configured: Any, h1: HostStatus, tmp_path: Path, unchanged_host: None
) -> None:
    key = tmp_path / "stranger"  # a fresh key the host does not know
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    configured(key=str(key))
    text = failed_up(stack)
    assert_one_line(text, f"root@{h1.address}:22: authentication refused", str(key))


def test_agent_python_missing(
    stack: TestStack, configured: Any, h1: HostStatus, unchanged_host: None
) -> None:
    configured(python="/nonexistent/bin/python3")
    text = failed_up(stack)
    assert_one_line(text, f"root@{h1.address}:22: the host agent", "exited while starting")


def test_object_exists_and_is_not_ours(
    stack: TestStack, configured: Any, h1: HostStatus, lab_api: Lab
) -> None:
    run_in(lab_api, h1.namespace, ["ip", "link", "add", "br-taken", "type", "bridge"])
    try:
        before = host_snapshot(lab_api, h1.namespace)
        configured(bridge="br-taken")
        text = failed_up(stack)
        assert_one_line(text, f"root@{h1.address}:22: ", "br-taken")
        assert host_snapshot(lab_api, h1.namespace) == before
    finally:
        run_in(lab_api, h1.namespace, ["ip", "link", "del", "br-taken"], check=False)
    stack.destroy()


def test_agent_answers_an_error(
    stack: TestStack, configured: Any, h1: HostStatus, lab_api: Lab
) -> None:
    before = host_snapshot(lab_api, h1.namespace)
    configured(tap_on="br-nowhere")  # an external bridge that does not exist on the host
    text = failed_up(stack)
    assert_one_line(text, f"root@{h1.address}:22: ", "br-nowhere")
    stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, h1.namespace)) == []


CLOSES = {
    "reset-at-once": (b"", True),
    "banner-then-reset": (b"SSH-2.0-OpenSSH_9.2\r\n", True),
    "close-at-once": (b"", False),  # an orderly close: paramiko's transport sees EOF
}


@pytest.fixture(params=sorted(CLOSES))
def closing_server(request: pytest.FixtureRequest, lab: LabStatus) -> Iterator[int]:
    """A TCP server on the operator's lab address that ends every connection at once."""
    greeting, reset = CLOSES[request.param]
    server = socket.create_server((lab.operator_address, 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if greeting:
                conn.sendall(greeting)
            if reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        thread.join(5)


def test_connection_ended_by_the_server_has_no_paramiko_noise(
    stack: TestStack, configured: Any, lab: LabStatus, closing_server: int
) -> None:
    configured(host=lab.operator_address, port=str(closing_server))
    text = failed_up(stack)
    assert_one_line(text, f"root@{lab.operator_address}:{closing_server}: ")


# --- the stack program's own config ------------------------------------------------------------
@dataclass(frozen=True)
class ProgramCase:
    id: str
    config: dict[str, str]
    line: tuple[str, ...]


def fleet_of_one(network: dict[str, object]) -> str:
    """kvmnet:hosts with one host (never contacted: the program fails before declaring)."""
    return json.dumps({"h2": {"connection": {"host": "h2.invalid"}, "networks": [network]}})


PROGRAM_CASES = [
    ProgramCase("unknown-model", {"model": "bridgeless"}, ("kvmnet:model", "'bridgeless'")),
    ProgramCase("bad-subnet", {"subnet": "10.0.1.0/33"}, ("kvmnet:subnet", "10.0.1.0/33")),
    ProgramCase(
        "gateway-outside", {"gateway": "10.0.2.1"}, ("kvmnet:gateway", "not inside subnet")
    ),
    ProgramCase(
        "forward-to-unknown-guest",
        {"portForwards": '[{"guest": "g9", "guest_port": 80, "host_port": 8080}]'},
        ("kvmnet:portForwards[0].guest", "'g9'"),
    ),
    ProgramCase(
        "memory-1",
        {"guests": '[{"name": "g1", "address": "10.0.1.11", "memory_mib": 1}]'},
        ("kvmnet:guests[0].memory_mib", "got 1"),
    ),
    ProgramCase(
        "address-300",
        {"guests": '[{"name": "g1", "address": "10.0.1.300"}]'},
        ("kvmnet:guests[0].address", "'10.0.1.300'"),
    ),
    ProgramCase(
        "address-with-kernel-parameter",
        {"guests": '[{"name": "g1", "address": "10.0.1.11 init=/bin/sh"}]'},
        ("kvmnet:guests[0].address", "must be an IPv4 address"),
    ),
    ProgramCase(
        "address-is-gateway",
        {"guests": '[{"name": "g1", "address": "10.0.1.254"}]'},
        ("kvmnet:guests[0].address", "gateway"),
    ),
    ProgramCase(
        "address-twice",
        {
            "guests": '[{"name": "g1", "address": "10.0.1.11"},'
            ' {"name": "g2", "address": "10.0.1.11"}]'
        },
        ("kvmnet:guests[1].address", "already g1's address"),
    ),
    ProgramCase(
        "mac-twice",
        {
            "guests": '[{"name": "g1", "address": "10.0.1.11", "mac": "52:54:00:00:00:01"},'
            ' {"name": "g2", "address": "10.0.1.12", "mac": "52:54:00:00:00:01"}]'
        },
        ("kvmnet:guests[1].mac", "is already declared on host", "by kvmnet:guests[0].mac"),
    ),
    ProgramCase(
        "tap-twice",
        {
            "guests": '[{"name": "g1", "address": "10.0.1.11", "tap": "vif9.0"},'
            ' {"name": "g2", "address": "10.0.1.12", "tap": "vif9.0"}]'
        },
        ("kvmnet:guests[1].tap: tap 'vif9.0' is already declared", "by kvmnet:guests[0].tap"),
    ),
    ProgramCase(
        "guest-name-with-kernel-parameter",
        {"guests": '[{"name": "g1 init=/bin/sh", "address": "10.0.1.11"}]'},
        ("kvmnet:guests[0].name", "must be 1-32 characters"),
    ),
    ProgramCase(
        "guest-unknown-key",
        {"guests": '[{"name": "g1", "address": "10.0.1.11", "ram": 128}]'},
        ("kvmnet:guests[0].ram", "unknown key"),
    ),
    ProgramCase(
        "guest-bad-mac",
        {"guests": '[{"name": "g1", "address": "10.0.1.11", "mac": "01:00:5e:00:00:01"}]'},
        ("kvmnet:guests[0].mac", "multicast"),
    ),
    ProgramCase(
        "address-is-broadcast",
        {"guests": '[{"name": "g1", "address": "10.0.1.255"}]'},
        ("kvmnet:guests[0].address", "broadcast address"),
    ),
    ProgramCase(
        "forward-bad-protocol",
        {
            "portForwards": '[{"guest": "g1", "guest_port": 80, "host_port": 8080,'
            ' "protocol": "icmp"}]'
        },
        ("kvmnet:portForwards[0].protocol", "tcp or udp"),
    ),
    # A new user's typos: found before any resource is declared (no host is contacted).
    ProgramCase(
        "unknown-stack-key",
        {"accelerater": "auto"},
        ("kvmnet:accelerater: unknown stack config key", "accelerator"),
    ),
    ProgramCase(
        "fleet-network-unknown-key",
        {"hosts": fleet_of_one({"name": "n", "subnte": "10.0.2.0/24"})},
        ("kvmnet:hosts.h2.networks[0].subnte: unknown key (known: ",),
    ),
    ProgramCase(
        "fleet-guest-unknown-key",
        {"hosts": fleet_of_one({"name": "n", "guests": [{"name": "g1", "adress": "10.0.1.11"}]})},
        ("kvmnet:hosts.h2.networks[0].guests[0].adress: unknown key (known: ",),
    ),
]


@pytest.fixture(scope="module")
def program_stack(tmp_path_factory: pytest.TempPathFactory, h1: HostStatus) -> Iterator[TestStack]:
    s = TestStack(tmp_path_factory.mktemp("program"), STACK_PROGRAM, project="errprog")
    s.ws.run(
        [
            "config",
            "set",
            "--stack",
            s.stack,
            "--path",
            "kvmnet:host.host",
            h1.address,
        ],
        s.dir,
    )
    for key, value in (
        ("known_hosts", h1.known_hosts),
        ("private_key_path", h1.private_key),
        ("python", VENV_PY),
    ):
        s.ws.run(
            ["config", "set", "--stack", s.stack, "--path", f"kvmnet:host.{key}", value], s.dir
        )
    for key in ("kernel", "initrd"):  # checked at preview, looked for only at up
        path = f"/nonexistent/{key}"
        s.ws.run(
            ["config", "set", "--stack", s.stack, "--path", f"kvmnet:guestImage.{key}", path], s.dir
        )
    try:
        yield s
    finally:
        s.remove()


def test_program_harness_previews(program_stack: TestStack) -> None:
    preview = program_stack.preview()
    assert "to create" in preview.stdout, preview.stdout


@pytest.mark.parametrize("case", PROGRAM_CASES, ids=[c.id for c in PROGRAM_CASES])
def test_program_config_errors_are_one_line(
    case: ProgramCase, program_stack: TestStack, lab_api: Lab, h1: HostStatus
) -> None:
    before = host_snapshot(lab_api, h1.namespace)
    for key, value in case.config.items():
        program_stack.config(f"kvmnet:{key}", value)
    try:
        proc = program_stack.preview(check=False)
    finally:
        for key in case.config:
            program_stack.pulumi("config", "rm", f"kvmnet:{key}")
    text = text_of(proc)
    assert proc.returncode != 0, text
    assert_one_line(text, *case.line)
    assert host_snapshot(lab_api, h1.namespace) == before
