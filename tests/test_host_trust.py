"""The host side trusts nothing it did not make (no engine, no lab: local processes only).

The bootstrap runs here as it runs on a host, with a stand-in agent; the run directory is a
temporary KVMNET_HOST_STATE.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmnet_provider.agent import rundir
from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.connection import credentials, framing
from kvmnet_provider.connection.bootstrap import BOOTSTRAP, code_digest
from kvmnet_provider.connection.settings import HostSettings, SettingError
from kvmnet_provider.resources import identity

# A stand-in agent (kvmnet_agent/agent/server.py): says where its code lives and which module
# `json` came from.
SERVER = """
import json, os, sys
def main():
    code = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    print(json.dumps({"hello": {"code": code,
                      "cwd": os.getcwd(), "json": json.__file__, "path": sys.path}}), flush=True)
    sys.stdin.readline()  # serve until told to stop
"""


def start_agent(
    run_root: Path, marker: str, cwd: Path, server: str = SERVER
) -> subprocess.Popen[str]:
    tmp = run_root.parent / "tmp"  # the agent's TMPDIR: it must never write there
    tmp.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-u", "-c", BOOTSTRAP, marker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "KVMNET_HOST_STATE": str(run_root), "TMPDIR": str(tmp)},
    )
    assert proc.stdin is not None
    files = {
        "kvmnet_agent/__init__.py": "",
        "kvmnet_agent/agent/__init__.py": "",
        "kvmnet_agent/agent/server.py": server,
    }
    SHIPPED[proc.pid] = files
    proc.stdin.write(json.dumps({"code": code_digest(files)}) + "\n")
    proc.stdin.flush()
    return proc


SHIPPED: dict[int, dict[str, str]] = {}  # what each started agent ships when asked


def hello(proc: subprocess.Popen[str], marker: str) -> dict[str, object]:
    """The agent's hello, its files sent when the host asks for them (as a session does)."""
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == marker
    first = json.loads(proc.stdout.readline())
    if "need" in first:
        proc.stdin.write(json.dumps(SHIPPED[proc.pid]) + "\n")
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())
    answer: dict[str, object] = first["hello"]
    return answer


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("bye\n")
    proc.stdin.flush()
    proc.wait(10)


def test_bootstrap_is_isolated_and_keeps_its_code_private(tmp_path: Path) -> None:
    run_root = tmp_path / "run"
    run_root.mkdir(mode=0o755)  # exists with looser modes: tightened
    home = tmp_path / "home"
    home.mkdir()
    (home / "json.py").write_text("raise SystemExit('shadowed')\n")  # in the working dir
    proc = start_agent(run_root, "M1", home)
    try:
        info = hello(proc, "M1")
        code = Path(str(info["code"]))
        assert info["cwd"] == "/"
        assert not str(info["json"]).startswith(str(home))
        assert code.parent == run_root / "agent-code"
        for directory in (run_root, run_root / "agent-code", code):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    finally:
        stop(proc)
    assert code.exists()  # kept for the next agent of the same code


def test_stale_code_dirs_go_and_live_ones_stay(tmp_path: Path) -> None:
    run_root = tmp_path / "run"
    live = start_agent(run_root, "A", tmp_path)
    try:
        live_code = Path(str(hello(live, "A")["code"]))
        killed = start_agent(run_root, "B", tmp_path, SERVER + "\n# another version\n")
        killed_code = Path(str(hello(killed, "B")["code"]))
        killed.kill()  # as when the SSH connection is cut: no cleanup of its own
        killed.wait(10)
        assert killed_code.exists() and killed_code != live_code
        # a copy that a writer which has died (no such PID) left half written
        half = killed_code.parent / f"{'0' * 32}.tmp-999999999"
        half.mkdir(mode=0o700)
        nxt = start_agent(run_root, "C", tmp_path, SERVER + "\n# a third\n")
        nxt_code = Path(str(hello(nxt, "C")["code"]))
        stop(nxt)
        assert not killed_code.exists() and not half.exists()
        assert live_code.exists()  # its agent still holds it
        codes = sorted(p.name for p in live_code.parent.iterdir() if not p.name.endswith(".lock"))
        assert codes == sorted([live_code.name, nxt_code.name])  # kept: the next of its code
    finally:
        stop(live)
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing in TMPDIR, ever


def test_run_dir_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "run"
    link.symlink_to(target)
    with pytest.raises(AgentError, match="not a directory owned"):
        rundir.private_dir(link)
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    rundir.private_dir(loose)
    rundir.private_dir(loose / "sub")
    for directory in (loose, loose / "sub"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    (loose / "f").symlink_to(tmp_path / "victim")
    with pytest.raises(OSError):
        open(loose / "f", "a+", opener=rundir.nofollow)
    assert not (tmp_path / "victim").exists()


def test_login_shell_chatter_is_skipped_once(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO('Welcome!\n{"hello": "fake"}\nMARK\n{"hello": {}}\n')
    skipped = framing.skip_preamble(stream, "MARK", "root@h1:22")
    assert skipped == ["Welcome!", '{"hello": "fake"}']
    assert stream.readline() == '{"hello": {}}\n'
    assert len(caplog.records) == 1 and "skipped 2 line(s)" in caplog.records[0].getMessage()


def test_owner_marks_are_injective() -> None:
    names = ["br x", "br_x", "br=x", "br=5Fx", "brüx", "br/x", "a" * 300, "a" * 299 + "b"]
    marks = [identity.owner_mark("p/s/Bridge/" + n) for n in names]
    assert len(set(marks)) == len(marks)
    for mark in marks:
        assert len(mark) <= 200
        assert all(c.isalnum() or c in "_.:/@+=-" for c in mark), mark
    assert identity.owner_mark("kvt/dev/Bridge/br") == "kvt/dev/Bridge/br"  # unchanged


def test_allow_agent_is_a_setting_and_off_by_default() -> None:
    assert HostSettings.from_props({"host": "h1"}).allow_agent is None
    assert "allow_agent" not in HostSettings.from_props({"host": "h1"}).to_props()
    assert HostSettings.from_props({"host": "h1", "allow_agent": True}).allow_agent is True
    with pytest.raises(SettingError, match="allow_agent"):
        HostSettings.from_props({"host": "h1", "allow_agent": "yes"})


def test_a_key_pasted_as_a_path_is_not_echoed() -> None:
    pasted = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAA\n"
    with pytest.raises(SettingError) as caught:
        HostSettings.from_props({"host": "h1", "private_key_path": pasted})
    assert "b3BlbnNzaC1rZXkt" not in str(caught.value)
    assert "not shown" in str(caught.value)
    with pytest.raises(SettingError, match="'key.pem'"):
        HostSettings.from_props({"host": "h1", "private_key_path": "key.pem"})


@pytest.fixture
def clean_credentials() -> Iterator[None]:
    credentials.configure(None, None)
    yield
    credentials.configure(None, None)


def test_credentials_per_host_are_offered_to_that_host_only(
    clean_credentials: None, tmp_path: Path
) -> None:
    key_file = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    per_host = json.dumps(
        {"198.18.0.2": {"privateKey": key_file.read_text()}, "198.18.0.3:2222": {"password": "pw3"}}
    )
    credentials.configure(key_file.read_text(), "stack-wide", per_host)
    assert credentials.configured_key("198.18.0.2", 22) is not None
    assert credentials.configured_password("198.18.0.2", 22) is None  # not the stack-wide one
    assert credentials.configured_key("198.18.0.3", 2222) is None  # nor the stack-wide key
    assert credentials.configured_password("198.18.0.3", 2222) == "pw3"
    assert "sshCredentials[198.18.0.2]" in credentials.key_source("198.18.0.2", 22)
    # Hosts without an entry (another port is another host) get no stack-wide secret either.
    for host, port in (("198.18.0.3", 22), ("198.18.0.9", 22)):
        assert credentials.configured_key(host, port) is None
        assert credentials.configured_password(host, port) is None
        assert credentials.key_source(host, port) == credentials.WITHHELD


def test_stack_wide_credentials_go_to_every_host_when_none_has_its_own(
    clean_credentials: None, tmp_path: Path
) -> None:
    key_file = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    credentials.configure(key_file.read_text(), "stack-wide", "")
    for host in ("198.18.0.2", "198.18.0.9"):
        assert credentials.configured_key(host, 22) is not None
        assert credentials.configured_password(host, 22) == "stack-wide"
        assert credentials.key_source(host, 22) == credentials.CONFIG_PRIVATE_KEY


def test_a_host_without_credentials_of_its_own_is_told_why_in_one_line(
    clean_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paramiko's connect is stubbed to refuse: what the operator reads, and what was offered."""
    from kvmnet_provider.connection import ssh
    from kvmnet_provider.connection.errors import HostError

    offered: dict[str, object] = {}

    def refuse(_client: object, **kwargs: object) -> None:
        offered.update(kwargs)
        raise ssh.paramiko.AuthenticationException("refused")

    monkeypatch.setattr(ssh, "open_tcp", lambda *_: None)
    monkeypatch.setattr(ssh.paramiko.SSHClient, "connect", refuse)
    credentials.configure(None, "stack-wide", json.dumps({"198.18.0.2": {"password": "own"}}))
    conn = {"host": "198.18.0.9", "known_hosts": "/nonexistent/known_hosts"}
    with pytest.raises(HostError) as caught:
        ssh.connect(HostSettings.from_props(conn))
    assert "password" not in offered and "pkey" not in offered
    message = str(caught.value)
    assert message.startswith("root@198.18.0.9:22: authentication refused") and "\n" not in message
    assert "give this host an entry in kvmnet:sshCredentials" in message


def test_a_bad_per_host_map_is_named_not_echoed(clean_credentials: None) -> None:
    credentials.configure(None, None, '{"h1": {"privateKey": "SECRET-TEXT", "colour": 1}}')
    with pytest.raises(ValueError) as caught:
        credentials.configured_key("h1", 22)
    assert "kvmnet:sshCredentials" in str(caught.value)
    assert "SECRET-TEXT" not in str(caught.value)


@pytest.mark.parametrize("insecure", [False, True])
def test_no_password_for_a_host_whose_key_was_not_checked(
    clean_credentials: None, monkeypatch: pytest.MonkeyPatch, insecure: bool
) -> None:
    """What paramiko is asked to offer (its connect is stubbed: no host is contacted)."""
    from kvmnet_provider.connection import ssh

    offered: dict[str, object] = {}

    def connect(_client: object, **kwargs: object) -> None:
        offered.update(kwargs)

    monkeypatch.setattr(ssh, "open_tcp", lambda *_: None)
    monkeypatch.setattr(ssh.paramiko.SSHClient, "connect", connect)
    credentials.configure(None, "pw")
    conn = {"host": "198.18.0.2", "insecure_accept_any_host_key": insecure}
    if not insecure:
        conn["known_hosts"] = "/nonexistent/known_hosts"  # checked (by the stubbed connect)
    ssh.connect(HostSettings.from_props(conn))
    assert ("password" in offered) is not insecure
    assert offered["allow_agent"] is False and offered["look_for_keys"] is False


def test_run_dir_documents_are_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    doc = tmp_path / "forwarding.json"
    doc.symlink_to(victim)
    with pytest.raises(OSError):
        rundir.read_text(doc)
    (tmp_path / "forwarding.json.tmp").symlink_to(victim)
    with pytest.raises(OSError):
        rundir.replace_text(doc, "{}")
    (tmp_path / "forwarding.json.tmp").unlink()
    rundir.replace_text(doc, "{}")  # the link itself is replaced, its target left alone
    assert not doc.is_symlink() and doc.read_text() == "{}"
    assert victim.read_text() == "precious"
    assert rundir.read_text(tmp_path / "absent.json") is None


@pytest.mark.parametrize("missing", [True, False])
def test_a_key_file_that_is_not_there_is_named_before_connecting(
    clean_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: bool
) -> None:
    from kvmnet_provider.connection import ssh
    from kvmnet_provider.connection.errors import HostError

    def no_connection(*_: object) -> None:
        raise AssertionError("connected with a key file that cannot be read")

    monkeypatch.setattr(ssh, "open_tcp", no_connection)
    path = str(tmp_path / "id_ed25519") if missing else str(tmp_path)  # nothing / a directory
    conn = {"host": "198.18.0.2", "known_hosts": "/nonexistent/known_hosts"}
    with pytest.raises(HostError) as caught:
        ssh.connect(HostSettings.from_props({**conn, "private_key_path": path}))
    problem = "does not exist on this machine" if missing else "is not a file"
    assert str(caught.value) == (
        f"root@198.18.0.2:22: connection.private_key_path {path} {problem} (set "
        "connection.private_key_path to your key, or the secret kvmnet:sshPrivateKey)"
    )


def test_no_credentials_at_all_says_what_to_set(
    clean_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paramiko's connect is stubbed to say what it says with no key, password or agent."""
    from kvmnet_provider.connection import ssh
    from kvmnet_provider.connection.errors import HostError

    def nothing_to_offer(_client: object, **kwargs: object) -> None:
        assert not {"pkey", "key_filename", "password"} & set(kwargs)
        raise ssh.paramiko.SSHException("No authentication methods available")

    monkeypatch.setattr(ssh, "open_tcp", lambda *_: None)
    monkeypatch.setattr(ssh.paramiko.SSHClient, "connect", nothing_to_offer)
    conn = {"host": "198.18.0.2", "known_hosts": "/nonexistent/known_hosts"}
    with pytest.raises(HostError) as caught:
        ssh.connect(HostSettings.from_props(conn))
    message = str(caught.value)
    assert message.startswith("root@198.18.0.2:22: no SSH credentials to offer: set "), message
    for setting in ("connection.private_key_path", "kvmnet:sshPrivateKey", "kvmnet:sshPassword",
                    "connection.allow_agent"):  # fmt: skip
        assert setting in message, message
    assert "\n" not in message and "SSH failed" not in message


def test_a_refused_key_names_the_user_and_what_to_check(
    clean_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A wrong user or a key the host does not know: the line says what to check."""
    from kvmnet_provider.connection import ssh
    from kvmnet_provider.connection.errors import HostError

    def refuse(_client: object, **_kwargs: object) -> None:
        raise ssh.paramiko.AuthenticationException("refused")

    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    monkeypatch.setattr(ssh, "open_tcp", lambda *_: None)
    monkeypatch.setattr(ssh.paramiko.SSHClient, "connect", refuse)
    conn = {"host": "198.18.0.9", "user": "rooot", "known_hosts": "/nonexistent/known_hosts",
            "private_key_path": str(key)}  # fmt: skip
    with pytest.raises(HostError) as caught:
        ssh.connect(HostSettings.from_props(conn))
    assert str(caught.value) == (
        f"rooot@198.18.0.9:22: authentication refused (credentials from key file {key}): check "
        "connection.user (rooot) and that the key's public half is in rooot's "
        "~/.ssh/authorized_keys there"
    )


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("EHOSTUNREACH", "is the host up and the address right? nothing routes to it from here"),
        ("ECONNREFUSED", "is sshd running there, on connection.port?"),
    ],
)
def test_an_unreachable_host_gets_the_hint_that_fits_the_cause(
    clean_credentials: None, monkeypatch: pytest.MonkeyPatch, code: str, hint: str
) -> None:
    import errno

    from kvmnet_provider.connection import ssh
    from kvmnet_provider.connection.errors import HostError

    number = getattr(errno, code)

    def fail(*_: object) -> None:
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(ssh, "open_tcp", fail)
    conn = {"host": "198.18.0.77", "known_hosts": "/nonexistent/known_hosts"}
    with pytest.raises(HostError) as caught:
        ssh.connect(HostSettings.from_props(conn))
    assert str(caught.value) == f"root@198.18.0.77:22: unreachable: {os.strerror(number)} ({hint})"
