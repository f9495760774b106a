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


def uids(pid: int) -> set[int]:
    """The real, effective, saved and filesystem uids of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return {int(field) for field in line.split()[1:]}


def no_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return True
    return False


def test_a_guest_boots_as_its_own_user_from_its_overlay_and_seed(
    agent: AgentSession, started: list[Any], tmp_path: Path
) -> None:
    """No run_as: QEMU runs as a system user of this guest's own (no shell, no home); the
    overlay and seed are that user's (0600) in root's 0700 directory; QEMU opens them as root,
    then runs as that user and the guest reads both. Delete removes the user; a kept overlay
    is root's again."""
    import base64
    import subprocess

    from kvmnet_lab.testing import GuestConsole

    from kvmnet_provider.cloudinit import build_seed

    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    seed = base64.b64encode(build_seed({"user-data": b"#cloud-config\n"})).decode()
    args = guest_args("kqrundisk", base_image=str(base), seed_iso=seed)
    live = agent.call("guest.start", args, timeout=180)
    started.append((live["pid"], "kqrundisk", args["owner"]))
    (uid,) = uids(live["pid"])
    user = pwd.getpwuid(uid)
    assert uid != 0 and user.pw_name.startswith("kvmnet-"), user
    assert user.pw_shell.endswith(("nologin", "false")) and not Path(user.pw_dir).exists(), user
    assert user.pw_gecos.startswith("kvmnet guest kqrundisk netns-"), user
    disk_dir = Path(live["disk_path"]).parent
    assert os.lstat(disk_dir).st_uid == 0 and os.lstat(disk_dir).st_mode & 0o777 == 0o700
    for path in (live["disk_path"], live["seed_path"]):
        assert os.lstat(path).st_uid == uid and os.lstat(path).st_mode & 0o777 == 0o600
    with GuestConsole(live["console_socket"]) as con:
        con.wait_ready(180)
        r = con.run("cat /sys/block/vda/size /sys/block/sr0/ro", timeout=30)
    assert r.status == 0 and r.output.split()[-2:] == [str(64 * 2048), "1"], r.output
    stop = {"name": "kqrundisk", "owner": args["owner"], "stop_timeout": 1}
    kept = agent.call("guest.stop", {**stop, "keep_disk": True})["kept_disk"]
    assert no_user(user.pw_name)  # the guest's user went with it
    assert os.lstat(kept).st_uid == 0, "a kept overlay belongs to no leftover uid"
    agent.call("guest.stop", stop)  # the kept overlay goes too
    assert not disk_dir.exists()


def test_guests_cannot_signal_each_other_and_root_only_when_asked(
    agent: AgentSession, started: list[Any]
) -> None:
    """Two guests, two users: neither's uid may signal the other's QEMU (EPERM), each may its
    own; the agent still reaches both over QMP (status) and stops them. run_as root: root."""
    import subprocess

    lives = {}
    for name in ("kqsiga", "kqsigb"):
        args = guest_args(name)
        lives[name] = agent.call("guest.start", args, timeout=180)
        started.append((lives[name]["pid"], name, args["owner"]))
    a, b = (lives[n]["pid"] for n in ("kqsiga", "kqsigb"))
    (uid_a,), (uid_b,) = uids(a), uids(b)
    assert 0 not in (uid_a, uid_b) and uid_a != uid_b
    names = [pwd.getpwuid(uid).pw_name for uid in (uid_a, uid_b)]

    def kill0(uid: int, pid: int) -> subprocess.CompletedProcess[str]:
        gid = pwd.getpwuid(uid).pw_gid
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                "kill", "-0", str(pid)]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    for uid, other in ((uid_a, b), (uid_b, a)):
        refused = kill0(uid, other)
        assert refused.returncode != 0, refused
        assert "Operation not permitted" in refused.stderr, refused.stderr
    assert kill0(uid_a, a).returncode == 0  # the check itself works
    for name in lives:  # QMP, made before the switch, answers root
        read = agent.call("guest.read", {"name": name, "owner": guest_args(name)["owner"]})
        assert read["status"] == "running", read

    args = guest_args("kqroot", run_as="root")
    live = agent.call("guest.start", args, timeout=180)
    started.append((live["pid"], "kqroot", args["owner"]))
    assert uids(live["pid"]) == {0}
    assert "-runas" not in Path(f"/proc/{live['pid']}/cmdline").read_bytes().decode()

    for name in ("kqsiga", "kqsigb"):
        stopped = agent.call("guest.stop", {"name": name, "owner": guest_args(name)["owner"]})
        assert stopped["how"] in ("powered down", "quit over QMP"), stopped  # QMP works
    assert all(no_user(name) for name in names), names


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
