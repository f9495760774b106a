"""kvmnet:keepSessions: a host's session kept between Pulumi commands by a keeper process.

Through the real engine on a lab host of its own: the commands after the first log in no
more; the keeper's socket is private and its process holds no secret where others can read
it; a keeper whose agent dies ends, and the next command logs in anew.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import host_props
from kvmnet_lab.lab import Lab, LabStatus, fresh_lab
from kvmnet_lab.testing.stack import TestStack

pytestmark = pytest.mark.e2e

KEEPER = b"kvmnet_provider.connection.keeper"


@pytest.fixture()
def own_lab(tmp_path: Path) -> Iterator[tuple[Lab, LabStatus]]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: e2e tests run as root (`make check` runs the others)")
    with fresh_lab("kk", hosts=1, base=tmp_path / "lab") as lab_and_status:
        yield lab_and_status


def keepers() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and KEEPER in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def logins(lab_api: Lab) -> int:
    """SSH logins the lab host's sshd accepted so far."""
    log = (lab_api.state_dir / "hosts" / "h1" / "sshd.log").read_text()
    return log.count("Accepted publickey")


def agents(lab_api: Lab, namespace: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    found = []
    for pid in out.stdout.split():
        try:
            if b"kvmnet_agent" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def wait_for(what: str, done: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def test_kept_sessions_serve_later_commands_without_a_new_login(
    tmp_path: Path, own_lab: tuple[Lab, LabStatus], monkeypatch: pytest.MonkeyPatch
) -> None:
    lab_api, lab = own_lab
    host = lab.hosts[0]
    run_dir = Path(tempfile.mkdtemp(prefix="kk", dir="/tmp"))  # short: a socket path's limit
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))  # the keepers' directory: this test's
    props = host_props(host)
    del props["private_key_path"]  # the key comes from secret config: it must stay secret
    key_text = Path(host.private_key).read_text()
    program = textwrap.dedent(
        f"""
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources import Bridge, BridgeArgs, TapPort, TapPortArgs

        conn = HostSettings(**{props!r})
        br = Bridge("br", BridgeArgs(conn, "br-kept"))
        for i in range(3):
            TapPort(f"tap{{i}}", TapPortArgs(conn, f"kept{{i}}", bridge=br))
        """
    )
    before = keepers()
    stack = TestStack(tmp_path, program, project="kept")
    try:
        stack.config("kvmnet:keepSessions", "60")
        stack.config("kvmnet:sshPrivateKey", key_text, secret=True)
        stack.up()
        (keeper,) = keepers() - before
        first = logins(lab_api)

        # Private: a 0700 directory of ours, a 0600 socket; no secret in argv or environment.
        directory = run_dir / f"kvmnet-keep-{os.geteuid()}"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        (sock,) = directory.glob("*.sock")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        body = key_text.strip().splitlines()[1]
        for what in ("cmdline", "environ"):
            assert body.encode() not in Path(f"/proc/{keeper}/{what}").read_bytes()
        assert b"PULUMI_CONFIG_PASSPHRASE" not in Path(f"/proc/{keeper}/environ").read_bytes()

        # The next commands ask the keeper: no new login, the same answers.
        stack.refresh()
        stack.preview_no_changes()
        assert logins(lab_api) == first
        assert keepers() - before == {keeper}

        # The host's agent dies (a reboot, a kill): its keeper ends, and the next command
        # logs in anew, through a new keeper.
        for pid in agents(lab_api, host.namespace):
            os.kill(pid, signal.SIGKILL)
        wait_for("the keeper ends", lambda: keeper not in keepers())
        assert not list(directory.glob("*.sock"))
        stack.refresh()
        stack.preview_no_changes()
        assert logins(lab_api) == first + 1
        stack.destroy()
        assert logins(lab_api) == first + 1
        # The lab going down ends the keeper it left: its connection is gone.
        stack.remove()
        lab_api.down()
        wait_for("every keeper of the test ends", lambda: not keepers() - before)
    finally:
        stack.remove()
        shutil.rmtree(run_dir, ignore_errors=True)
