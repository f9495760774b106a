"""Expected failures as one line, unexpected ones with their traceback (no engine here: the
real wrapper of Pulumi's dynamic-provider server, taken from the installed SDK's source)."""

from __future__ import annotations

import ast
import types
from pathlib import Path
from typing import Any

import pulumi
import pytest

from kvmnet_provider import errors
from kvmnet_provider.connection.session import AgentCallError, HostError
from kvmnet_provider.spec.validate import InvalidInput

SERVER = Path(pulumi.__file__).parent / "dynamic" / "__main__.py"


def dynamic_server_wrapper() -> types.ModuleType:
    """A module holding the SDK's own `_abort_with_traceback` and its imports (the real
    server module starts serving when imported, so only these parts are taken)."""
    tree = ast.parse(SERVER.read_text())
    keep = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        or (isinstance(node, ast.FunctionDef) and node.name == "_abort_with_traceback")
    ]
    module = types.ModuleType("fake_dynamic_server")
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(SERVER), "exec"), module.__dict__)
    return module


class AbortContext:
    details: str | None = None

    def abort(self, _code: Any, details: str) -> None:
        self.details = details
        raise RuntimeError("aborted")  # what grpc's context.abort does


def served(module: types.ModuleType, exc: BaseException) -> str:
    @module._abort_with_traceback
    def create(_self: Any, _request: Any, _context: Any) -> None:
        raise exc

    context = AbortContext()
    with pytest.raises(RuntimeError, match="aborted"):
        create(None, None, context)
    assert context.details is not None
    return context.details


@pytest.fixture
def server() -> types.ModuleType:
    module = dynamic_server_wrapper()
    assert "traceback" in module.__dict__, "the SDK's server no longer formats with traceback"
    errors.report_expected_errors_as_one_line([module])
    return module


@pytest.mark.parametrize(
    "exc, line",
    [
        (
            HostError("root@h1:22: unreachable: Connection refused"),
            "root@h1:22: unreachable: Connection refused",
        ),
        (
            AgentCallError("root@h1:22", "conflict", "bridge br-in exists and is not ours"),
            "root@h1:22: bridge br-in exists and is not ours",
        ),
        (InvalidInput("name: must be 1-15 characters"), "name: must be 1-15 characters"),
        (
            errors.KvmnetError("guest g1 is not running on h1\n run `pulumi refresh`"),
            "guest g1 is not running on h1; run `pulumi refresh`",
        ),
        (
            errors.ConfigError("kvmnet:subnet", "'10.0.1.0/33' is not an IPv4 network"),
            "kvmnet:subnet: '10.0.1.0/33' is not an IPv4 network",
        ),
    ],
)
def test_expected_errors_are_one_line(server: types.ModuleType, exc: Exception, line: str) -> None:
    details = served(server, exc)
    assert "Traceback" not in details
    assert "\n" not in details
    assert details == line


def test_bugs_keep_their_traceback(server: types.ModuleType) -> None:
    details = served(server, KeyError("oops"))
    assert details.startswith("Traceback (most recent call last):")
    assert "KeyError: 'oops'" in details


def test_installing_twice_wraps_once(server: types.ModuleType) -> None:
    first = server.traceback
    errors.report_expected_errors_as_one_line([server])
    assert server.traceback is first


def test_not_installed_outside_the_server() -> None:
    assert errors.dynamic_servers() == []  # pytest's __main__ is not Pulumi's server


def test_config_error_is_a_run_error() -> None:
    """Pulumi's language host prints a RunError as one line, without a traceback."""
    exc = errors.ConfigError("kvmnet:model", "unknown model 'foo'")
    assert isinstance(exc, pulumi.RunError) and isinstance(exc, ValueError)
    assert str(exc) == "kvmnet:model: unknown model 'foo'"


def trust_command(hint: str) -> str:
    """The shell command a host-key error's hint tells the user to run."""
    return hint.split(" (", 1)[1].split(") or pin it", 1)[0]


@pytest.mark.parametrize("configured", [False, True])
@pytest.mark.parametrize("folder_exists", [False, True])
def test_the_host_key_hint_works_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: bool, folder_exists: bool
) -> None:
    """Followed word for word, the hint's command makes the known_hosts file the provider
    reads, its folder too when there is none (a fresh machine has no ~/.ssh): 0700."""
    import os
    import subprocess

    from kvmnet_provider.connection import HostSettings
    from kvmnet_provider.connection.ssh import _trust_hint, known_hosts_file

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    folder = tmp_path / "kv hosts" if configured else home / ".ssh"
    if folder_exists:
        folder.mkdir(mode=0o755)
    settings = HostSettings(
        host="198.18.0.11", port=2222, known_hosts=str(folder / "known") if configured else None
    )
    hint = _trust_hint(settings)
    assert "\n" not in hint and hint.endswith("entry name [198.18.0.11]:2222"), hint
    assert ("mkdir" in hint) is not folder_exists, hint
    if not configured:
        assert "~/.ssh/known_hosts" in hint, hint  # as the user's shell spells it
    # ssh-keyscan itself would ask the host: stand-in printing one entry.
    keyscan = 'ssh-keyscan() { echo "[198.18.0.11]:2222 ssh-ed25519 AAAA"; }; '
    subprocess.run(
        ["bash", "-c", keyscan + trust_command(hint)],
        check=True,
        env={**os.environ, "HOME": str(home)},
    )
    known = known_hosts_file(settings)
    assert known.parent == folder
    assert known.read_text() == "[198.18.0.11]:2222 ssh-ed25519 AAAA\n"
    assert (folder.stat().st_mode & 0o777) == (0o755 if folder_exists else 0o700)


def test_a_name_another_resource_holds_names_the_fix() -> None:
    """The refusal of a bridge, tap, guest or disk directory says which stack holds it and
    what to do: another stack's (rename, or destroy there) or this stack's own old one
    (Pulumi creates before it deletes: rename, or an up without the new one first)."""
    from kvmnet_provider.agent.errors import held_fix
    from kvmnet_provider.agent.guests.rundir import not_ours

    other = held_fix("kvmnet/t2isolated/Bridge/net-bridge", "kvmnet/t2routed/Bridge/net-bridge")
    assert other.startswith("another stack (kvmnet/t2isolated) holds it: give this one another")
    assert "or destroy that stack's first" in other
    own = held_fix("kvmnet/t2nat/TapPort/net-g2-tap", "kvmnet/t2nat/TapPort/net-g3-tap")
    assert own.startswith("it is this stack's own, not deleted yet")
    assert "run up once without it" in own
    meta = {"owner": "kvmnet/other/QemuGuest/net-g1"}
    refusal = not_ours(Path("/run/kvmnet/guests/g1"), meta, "kvmnet/mine/QemuGuest/net-g1")
    assert "kvmnet will not touch it: another stack (kvmnet/other) holds it" in refusal.message
    assert "\n" not in refusal.message
    assert not_ours(Path("/run/kvmnet/guests/g1"), meta).message.endswith("will not touch it")
