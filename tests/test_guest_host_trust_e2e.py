"""QEMU on the host trusts nothing: it may run as another user, and it makes sockets only in
the guest's run directory (through the host agent on a lab host, with the test image)."""

from __future__ import annotations

import dataclasses
import os
import pwd
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import LabStatus
from kvmnet_lab.testing import guest_image_dir

from kvmnet_provider.connection import agent_session
from kvmnet_provider.connection.session import AgentCallError, AgentSession

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent(lab: LabStatus) -> AgentSession:
    settings = host_settings(lab.hosts[0], sys.executable)
    return agent_session(dataclasses.replace(settings, connect_timeout=5.0))


def guest_args(name: str, **extra: Any) -> dict[str, Any]:
    image = guest_image_dir()
    return {
        "owner": f"kqtrust/dev/QemuGuest/{name}",
        "name": name,
        "kernel": str(image / "vmlinuz"),
        "initrd": str(image / "initrd.img"),
        "cmdline": "console=ttyS0 quiet",
        "accelerator": "tcg",
        "stop_timeout": 1,
        **extra,
    }


def qemu_of(pid: int, name: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-name" in argv and name.encode() in argv and b"qemu" in argv[0]


@pytest.fixture
def started(agent: AgentSession) -> Iterator[list[tuple[int, str, str]]]:
    """Guests this test started, stopped (or killed, only if still that guest) afterwards."""
    guests: list[tuple[int, str, str]] = []
    yield guests
    for pid, name, owner in guests:
        try:
            agent.call("guest.stop", {"name": name, "owner": owner, "stop_timeout": 1})
        finally:
            if qemu_of(pid, name):
                os.kill(pid, signal.SIGKILL)


def test_qemu_runs_as_the_run_as_user(agent: AgentSession, started: list[Any]) -> None:
    args = guest_args("kqrunas", run_as="nobody")
    live = agent.call("guest.start", args, timeout=180)
    started.append((live["pid"], "kqrunas", args["owner"]))
    status = Path(f"/proc/{live['pid']}/status").read_text()
    uid = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uid) == {str(pwd.getpwnam("nobody").pw_uid)}, uid
    assert "-sandbox" in Path(f"/proc/{live['pid']}/cmdline").read_bytes().decode(errors="replace")
    assert live["status"] == "running", live
    with socket.socket(socket.AF_UNIX) as console:  # root still reaches its console
        console.connect(live["console_socket"])


def test_run_as_guest_boots_from_its_overlay_and_seed(
    agent: AgentSession, started: list[Any], tmp_path: Path
) -> None:
    """The overlay and seed are the run_as user's (0600) in root's 0700 directory; QEMU opens
    them as root, then runs as that user and the guest reads both."""
    import base64
    import subprocess

    from kvmnet_lab.testing import GuestConsole

    from kvmnet_provider.cloudinit import build_seed

    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    seed = base64.b64encode(build_seed({"user-data": b"#cloud-config\n"})).decode()
    args = guest_args("kqrundisk", run_as="nobody", base_image=str(base), seed_iso=seed)
    live = agent.call("guest.start", args, timeout=180)
    started.append((live["pid"], "kqrundisk", args["owner"]))
    nobody = pwd.getpwnam("nobody").pw_uid
    status = Path(f"/proc/{live['pid']}/status").read_text()
    uid = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uid) == {str(nobody)}, uid
    disk_dir = Path(live["disk_path"]).parent
    assert os.lstat(disk_dir).st_uid == 0 and os.lstat(disk_dir).st_mode & 0o777 == 0o700
    for path in (live["disk_path"], live["seed_path"]):
        assert os.lstat(path).st_uid == nobody and os.lstat(path).st_mode & 0o777 == 0o600
    with GuestConsole(live["console_socket"]) as con:
        con.wait_ready(180)
        r = con.run("cat /sys/block/vda/size /sys/block/sr0/ro", timeout=30)
    assert r.status == 0 and r.output.split()[-2:] == [str(64 * 2048), "1"], r.output
    agent.call("guest.stop", {"name": "kqrundisk", "owner": args["owner"], "stop_timeout": 1})
    assert not disk_dir.exists()


def test_run_as_a_missing_user_is_refused(agent: AgentSession) -> None:
    with pytest.raises(AgentCallError, match="run_as user kqnosuchuser does not exist"):
        agent.call("guest.start", guest_args("kqnouser", run_as="kqnosuchuser"), timeout=60)


def test_a_socket_outside_the_run_dir_is_refused_and_left_alone(
    agent: AgentSession, tmp_path: Path
) -> None:
    """A service's socket (here one this test made) is neither replaced nor deleted."""
    path = tmp_path / "service.sock"
    with socket.socket(socket.AF_UNIX) as service:
        service.bind(str(path))
        service.listen()
        inode = path.stat().st_ino
        for key in ("console_socket", "qmp_socket"):
            with pytest.raises(AgentCallError, match="outside the guest's run directory"):
                agent.call("guest.start", guest_args("kqsock", **{key: str(path)}), timeout=60)
        assert path.is_socket() and path.stat().st_ino == inode
        assert agent.call("guest.read", {"name": "kqsock", "owner": "x/y/QemuGuest/kqsock"}) is None
