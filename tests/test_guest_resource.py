"""QemuGuest: argv and validation (no engine), then two real guests through the real engine.

The end-to-end test checks the host from outside the code under test: /proc/PID/cmdline,
`ip netns pids`, the run directory, and the guests' own shells over their serial consoles.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import HostStatus, LabStatus
from kvmnet_lab.testing import GuestConsole, guest_image_dir
from kvmnet_lab.testing.stack import TestStack
from pulumi.runtime.rpc import UNKNOWN  # the SDK's sentinel, not the code under test's copy

from kvmnet_provider.agent import hoststate
from kvmnet_provider.agent.guests import argv as qemu_argv
from kvmnet_provider.agent.guests import kvm, process, qmp
from kvmnet_provider.connection import HostSettings, agent_session
from kvmnet_provider.connection.session import AgentCallError
from kvmnet_provider.resources.guest import QemuGuestProvider
from kvmnet_provider.spec import guest as guest_spec
from kvmnet_provider.spec.validate import InvalidInput

CONN = {"host": "198.18.0.10", "known_hosts": "/tmp/kh", "private_key_path": "/tmp/id"}
PATHS = qemu_argv.guest_paths(Path("/run/kvmnet/netns-1/guests/g1"), {})


def spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "owner": "proj/dev/QemuGuest/g1",
        "name": "g1",
        "memory_mib": 128,
        "kernel": "/img/vmlinuz",
        "initrd": "/img/initrd.img",
        "cmdline": "console=ttyS0 kvmnet.ip=10.0.1.11/24 kvmnet.name=g1",
        "nics": [
            {"tap": "vif1.0", "mac": "52:54:00:AA:00:01"},
            {"tap": "vif1.1", "mac": "52:54:00:aa:01:01", "model": "e1000"},
        ],
        "accelerator": "tcg",
    }
    raw.update(overrides)
    return raw


def after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


# --- argv and validation: pure, no host ----------------------------------------------------
def test_argv_direct_boot_detached_with_taps_console_and_qmp() -> None:
    s = guest_spec.normalise_spec(spec())
    argv = qemu_argv.build_argv(s, PATHS, "tcg")
    assert argv[0] == "qemu-system-x86_64"
    assert "-nographic" not in argv and argv[-1] == "-daemonize"
    assert after(argv, "-name") == ["g1"]
    assert after(argv, "-accel") == ["tcg"] and "-cpu" not in argv
    assert after(argv, "-m") == ["128"] and after(argv, "-smp") == ["1"]
    assert after(argv, "-display") == ["none"]
    assert {"-nodefaults", "-no-user-config"} <= set(argv)
    assert after(argv, "-kernel") == ["/img/vmlinuz"]
    assert after(argv, "-initrd") == ["/img/initrd.img"]
    assert after(argv, "-append") == ["console=ttyS0 kvmnet.ip=10.0.1.11/24 kvmnet.name=g1"]
    run = "/run/kvmnet/netns-1/guests/g1"
    assert after(argv, "-chardev") == [
        f"socket,id=s0,path={run}/console.sock,server=on,wait=off,logfile={run}/console.log"
    ]
    assert after(argv, "-serial") == ["chardev:s0"]
    assert after(argv, "-qmp") == [f"unix:{run}/qmp.sock,server=on,wait=off"]
    assert after(argv, "-pidfile") == [f"{run}/qemu.pid"]
    assert after(argv, "-netdev") == [
        "tap,id=n0,ifname=vif1.0,script=no,downscript=no",
        "tap,id=n1,ifname=vif1.1,script=no,downscript=no",
    ]
    assert after(argv, "-device") == [
        "virtio-net-pci,netdev=n0,mac=52:54:00:aa:00:01",
        "e1000,netdev=n1,mac=52:54:00:aa:01:01",
    ]
    assert after(argv, "-sandbox") == ["on,obsolete=deny,resourcecontrol=deny"]
    # the same spec, written another way (keys in another order, a MAC in upper case), builds
    # the same argv (so a restarted provider sees no change) ...
    raw = spec()
    raw["nics"] = [dict(n, mac=n["mac"].upper()) for n in raw["nics"]]
    again = guest_spec.normalise_spec(dict(reversed(list(raw.items()))))
    assert qemu_argv.argv_hash(qemu_argv.build_argv(again, PATHS, "tcg")) == qemu_argv.argv_hash(
        argv
    )
    assert qemu_argv.argv_hash(argv) != qemu_argv.argv_hash(qemu_argv.build_argv(s, PATHS, "kvm"))


RUN = "/run/kvmnet/netns-4026532321/guests/g1"  # the shape of g1's run dir on a host


def test_argv_disks_kvm_cpu_and_own_socket_paths() -> None:
    s = guest_spec.normalise_spec(
        spec(
            kernel=None,
            initrd=None,
            cmdline=None,
            vcpus=4,
            memory_mib=2048,
            disks=[
                {"path": "/var/lib/vm/g1.qcow2", "format": "qcow2"},
                {"path": "/var/lib/vm/data.img", "format": "raw", "interface": "ide"},
            ],
            console_socket=f"{RUN}/serial.sock",
            qmp_socket=f"{RUN}/qmp.sock",
            accelerator="kvm",
        )
    )
    paths = qemu_argv.guest_paths(Path(RUN), s)
    argv = qemu_argv.build_argv(s, paths, "kvm")
    assert after(argv, "-accel") == ["kvm"] and after(argv, "-cpu") == ["host"]
    assert after(argv, "-m") == ["2048"] and after(argv, "-smp") == ["4"]
    assert "-kernel" not in argv and "-append" not in argv
    assert after(argv, "-drive") == [
        "file=/var/lib/vm/g1.qcow2,format=qcow2,if=virtio",
        "file=/var/lib/vm/data.img,format=raw,if=ide",
    ]
    assert after(argv, "-chardev")[0].startswith(f"socket,id=s0,path={RUN}/serial.sock,")
    assert after(argv, "-qmp") == [f"unix:{RUN}/qmp.sock,server=on,wait=off"]
    # a CPU model asked for is kept under both; "host" is dropped when falling back to TCG
    assert after(qemu_argv.build_argv(dict(s, cpu="qemu64,+ssse3"), paths, "tcg"), "-cpu") == [
        "qemu64,+ssse3"
    ]
    assert "-cpu" not in qemu_argv.build_argv(dict(s, cpu="host"), paths, "tcg")
    with pytest.raises(InvalidInput):
        qemu_argv.build_argv(s, paths, "auto")


@pytest.mark.parametrize(
    ("overrides", "prop"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "x" * 33}, "name"),
        ({"name": ".."}, "name"),
        ({"memory_mib": 63}, "memory_mib"),
        ({"memory_mib": 1048577}, "memory_mib"),
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": 65}, "vcpus"),
        ({"vcpus": True}, "vcpus"),
        ({"kernel": "vmlinuz"}, "kernel"),
        ({"kernel": "/img/../etc/shadow"}, "kernel"),
        ({"kernel": "/img/a,b"}, "kernel"),
        ({"initrd": "/img/with space"}, "initrd"),
        ({"cmdline": "console=ttyS0\ninit=/bin/sh"}, "cmdline"),
        ({"cmdline": "x" * 1025}, "cmdline"),
        ({"cmdline": "caf\u00e9"}, "cmdline"),
        ({"disks": [{"path": "/d.img", "format": "vmdk"}]}, "disks"),
        ({"disks": [{"path": "/d.img", "format": "raw", "interface": "scsi"}]}, "disks"),
        ({"disks": [{"path": "/d.img", "format": "raw", "cache": "none"}]}, "disks"),
        ({"disks": [{"path": "/d.img", "format": "raw"}] * 2}, "disks"),
        ({"nics": [{"tap": "a-name-far-too-long", "mac": "52:54:00:00:00:01"}]}, "nics"),
        ({"nics": [{"tap": "t0", "mac": "53:54:00:00:00:01"}]}, "nics"),  # multicast
        ({"nics": [{"tap": "t0", "mac": "52:54:00:00:00"}]}, "nics"),
        ({"nics": [{"tap": "t0", "mac": "52:54:00:00:00:01", "model": "rtl8139"}]}, "nics"),
        (
            {
                "nics": [
                    {"tap": "t0", "mac": "52:54:00:00:00:01"},
                    {"tap": "t0", "mac": "52:54:00:00:00:02"},
                ]
            },
            "nics",
        ),
        ({"accelerator": "hvf"}, "accelerator"),
        ({"cpu": "host;reboot"}, "cpu"),
        ({"console_socket": "/" + "s" * 107}, "console_socket"),
        ({"qmp_socket": "relative.sock"}, "qmp_socket"),
        ({"qemu": "qemu system"}, "qemu"),
        ({"stop_timeout": 0}, "stop_timeout"),
    ],
)
def test_invalid_inputs_fail_check_naming_the_property(
    overrides: dict[str, Any], prop: str
) -> None:
    with pytest.raises(InvalidInput, match=f"^{prop} "):
        guest_spec.normalise_spec(spec(**overrides))  # the host's own check
    news = {"connection": CONN, **spec(**overrides)}
    result = QemuGuestProvider().check({}, news)  # the controller's, at preview
    assert [f.property for f in result.failures] == [prop], result.failures


@pytest.mark.parametrize(
    "path",
    [
        "/run/dbus/system_bus_socket",  # another service's socket
        "/run/kvmnet/netns-4026532321/guests/g2/console.sock",  # another guest's run dir
        "/run/kvmnet/netns-4026532321/guests/g1/guest.json",  # a run-dir file, not a socket
        "/run/kvmnet/netns-4026532321/guests/g1/sub/console.sock",  # not directly in it
        "/tmp/guests/g1/console.sock",  # no namespace's run dir
    ],
)
def test_a_socket_outside_the_run_dir_fails_at_preview(path: str) -> None:
    for key in ("console_socket", "qmp_socket"):
        result = QemuGuestProvider().check({}, {"connection": CONN, **spec(**{key: path})})
        assert [(f.property, "outside the guest's run directory" in f.reason)
                for f in result.failures] == [(key, True)], result.failures  # fmt: skip
    inside = {"console_socket": f"{RUN}/c.sock", "qmp_socket": f"{RUN}/q.sock"}
    assert not QemuGuestProvider().check({}, {"connection": CONN, **spec(**inside)}).failures
    # not known at preview: nothing to say yet (the host checks it at up)
    for unknown in ({"console_socket": UNKNOWN}, {"name": UNKNOWN, **inside}):
        result = QemuGuestProvider().check({}, {"connection": CONN, **spec(**unknown)})
        assert not result.failures, result.failures


@pytest.mark.parametrize(
    ("overrides", "prop"),
    [
        ({"kernel": None, "initrd": None, "cmdline": None}, "kernel"),  # nothing to boot
        ({"kernel": None, "disks": [{"path": "/d.img", "format": "raw"}]}, "initrd"),
        ({"cpu": "host"}, "cpu"),  # -cpu host under TCG
        ({"console_socket": "/run/s.sock", "qmp_socket": "/run/s.sock"}, "qmp_socket"),
    ],
)
def test_cross_field_rules(overrides: dict[str, Any], prop: str) -> None:
    result = QemuGuestProvider().check({}, {"connection": CONN, **spec(**overrides)})
    assert prop in [f.property for f in result.failures], result.failures
    with pytest.raises(InvalidInput):
        guest_spec.normalise_spec(spec(**overrides))


def test_check_normalises_and_defaults() -> None:
    result = QemuGuestProvider().check({}, {"connection": CONN, **spec(accelerator=None)})
    assert not result.failures
    inputs = result.inputs
    assert inputs["accelerator"] == "auto" and inputs["vcpus"] == 1
    assert inputs["qemu"] == "qemu-system-x86_64" and inputs["stop_timeout"] == 10
    assert inputs["nics"] == [
        {"tap": "vif1.0", "mac": "52:54:00:aa:00:01", "model": "virtio-net-pci"},
        {"tap": "vif1.1", "mac": "52:54:00:aa:01:01", "model": "e1000"},
    ]
    # at preview a TapPort's name is not known yet: left as is, no failure
    unknown = {"tap": UNKNOWN, "mac": "52:54:00:aa:00:01"}
    result = QemuGuestProvider().check({}, {"connection": CONN, **spec(nics=[unknown])})
    assert not result.failures and result.inputs["nics"] == [unknown]


def test_diff_compares_what_was_asked_not_what_the_host_resolved() -> None:
    provider = QemuGuestProvider()
    news = provider.check({}, {"connection": CONN, **spec(accelerator="auto")}).inputs
    live = {
        "pid": 4242,
        "status": "running",
        "accelerator": "tcg",
        "accelerator_reason": "auto: no KVM",
        "console_socket": "/run/kvmnet/netns-1/guests/g1/console.sock",
        "qmp_socket": "/run/kvmnet/netns-1/guests/g1/qmp.sock",
        "macs": ["52:54:00:aa:00:01", "52:54:00:aa:01:01"],
    }
    olds = provider._outputs(news, live)
    assert olds["accelerator"] == "tcg" and olds["requested"]["accelerator"] == "auto"
    assert not provider.diff("id", olds, news).changes
    # a refresh keeps what was asked for
    assert provider._outputs(olds, live)["requested"] == olds["requested"]

    # What only changes QEMU's command line restarts the guest on its disk: an update.
    for prop, value in (
        ("memory_mib", 256),
        ("vcpus", 2),
        ("cmdline", "console=ttyS0"),
        ("accelerator", "kvm"),
        ("cpu", "max"),
        ("nics", [{"tap": "vif1.0", "mac": "52:54:00:aa:00:09", "model": "virtio-net-pci"}]),
        ("stop_timeout", 3),
    ):
        d = provider.diff("id", olds, {**news, prop: value})
        assert d.changes and not d.replaces, prop
    for prop, value in (
        ("name", "g2"),
        ("console_socket", "/run/kvmnet/netns-1/guests/g1/c2.sock"),
        ("run_as", "nobody"),
    ):
        d = provider.diff("id", olds, {**news, prop: value})
        assert d.changes and d.replaces == [prop], prop
        assert d.delete_before_replace  # the name, run dir and taps are the guest's own
    # outputs only the host knows (a new PID after a restart) are no change
    assert not provider.diff("id", {**olds, "pid": 5151, "status": "running"}, news).changes


def test_only_our_qemu_is_ever_signalled() -> None:
    assert not process.is_our_qemu(os.getpid(), "g1", "/x/qemu.pid")
    assert not process.is_our_qemu(1, "g1", "/x/qemu.pid")
    assert not process.is_our_qemu(0, "g1", "/x/qemu.pid")
    assert not process.is_our_qemu(2**22 + 7, "g1", "/x/qemu.pid")  # no such process


@pytest.mark.e2e  # probes /dev/kvm and QEMU, as root
def test_auto_accelerator_resolves_on_this_machine() -> None:
    accel, reason = kvm.resolve_accelerator("auto", "qemu-system-x86_64", None)
    assert accel in ("kvm", "tcg")
    assert reason.startswith("auto: ") and len(reason) > 10
    if accel == "tcg":
        assert "using tcg" in reason
    # asked for explicitly: no probe, reported as such
    assert kvm.resolve_accelerator("tcg", "qemu-system-x86_64", None) == (
        "tcg",
        "tcg requested",
    )


@pytest.mark.e2e  # a real QEMU (`make deps` installs it)
def test_qmp_library_and_plain_fallback_against_a_real_qemu(tmp_path: Path) -> None:
    """Both QMP paths: `qemu.qmp` (the venv has it) and the stdlib exchange a bare host uses."""
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "none", "-display", "none", "-nodefaults", "-S"]
        + ["-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until("the QMP socket", sock.exists, 10)
        status = qmp.qmp(str(sock), ["query-status"])[0]
        assert status["status"] == "prelaunch" and status["running"] is False
        assert qmp.qmp_plain(str(sock), ["query-status"], 3.0)[0]["status"] == "prelaunch"
        assert qmp.qmp_plain(str(sock), ["quit"], 3.0) == [{}]
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- end to end: lab host, real engine, real guests ----------------------------------------
PROGRAM = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources.guest import GuestNicArgs, QemuGuest, QemuGuestArgs
from kvmnet_provider.resources.links import Bridge, BridgeArgs, TapPort, TapPortArgs

cfg = pulumi.Config()
conn = HostSettings(**{conn!r})
bridge = Bridge("br", BridgeArgs(connection=conn, name="kqbr0"))
for i in (1, 2):
    tap = TapPort(f"tap{{i}}", TapPortArgs(connection=conn, name=f"kqtap{{i}}", bridge=bridge))
    guest = QemuGuest(
        f"g{{i}}",
        QemuGuestArgs(
            connection=conn,
            name=f"kqg{{i}}",
            memory_mib=cfg.get_int(f"g{{i}}_memory") or 128,
            kernel={kernel!r},
            initrd={initrd!r},
            cmdline=f"console=ttyS0 quiet panic=-1 kvmnet.ip=10.0.1.1{{i}}/24 kvmnet.name=g{{i}}",
            nics=[GuestNicArgs(tap=tap, mac=f"52:54:00:6b:71:0{{i}}")],
            accelerator="tcg",
            stop_timeout=2,
        ),
    )
    for key in ("pid", "status", "console_socket", "qmp_socket", "macs", "accelerator",
                "accelerator_reason", "run_dir"):
        pulumi.export(f"g{{i}}_{{key}}", getattr(guest, key))
"""


def settings(host: HostStatus) -> HostSettings:
    return host_settings(host, sys.executable)


def cmdline(pid: int) -> list[str]:
    try:
        return [p.decode() for p in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if p]
    except OSError:
        return []


def is_guest(pid: int, name: str) -> bool:
    argv = cmdline(pid)
    return bool(argv) and "qemu" in argv[0] and ("-name", name) in zip(argv, argv[1:], strict=False)


def wait_until(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.1)


def kill_guest(pid: int, name: str) -> None:
    """SIGKILL one guest's QEMU, only after its cmdline shows it is that guest."""
    if is_guest(pid, name):
        os.kill(pid, signal.SIGKILL)
        wait_until(f"qemu {pid} to exit", lambda: not is_guest(pid, name), 10)


def ping_ok(console_path: str, target: str) -> None:
    with GuestConsole(console_path) as con:
        con.wait_ready(180)
        r = con.run(f"ping -c 2 -W 2 {target}", timeout=30)
    assert r.status == 0, r.output
    assert "2 packets transmitted, 2 packets received" in r.output, r.output


def namespace_qemus(ns: str) -> list[str]:
    pids = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=True
    ).stdout.split()
    return [" ".join(cmdline(int(p))) for p in pids if "qemu" in " ".join(cmdline(int(p)))]


@dataclass
class GuestRun:
    stack: TestStack
    host: HostStatus
    seen: list[tuple[int, str]] = field(default_factory=list)  # (pid, guest name) started


@pytest.fixture
def guest_run(tmp_path: Path, lab: LabStatus) -> Iterator[GuestRun]:
    host = lab.hosts[0]
    image = guest_image_dir()
    program = textwrap.dedent(PROGRAM).format(
        conn=settings(host).to_props(),
        kernel=str(image / "vmlinuz"),
        initrd=str(image / "initrd.img"),
    )
    run = GuestRun(TestStack(tmp_path, program, project="kqguest"), host)
    try:
        yield run
    finally:
        run.stack.remove()
        for pid, name in run.seen:  # nothing may survive, even a failed test
            kill_guest(pid, name)


@pytest.mark.e2e
def test_auto_accelerator_reported_by_the_host_agent(lab: LabStatus) -> None:
    agent = agent_session(settings(lab.hosts[0]))
    answer = agent.call("guest.accelerator", {"accelerator": "auto"}, timeout=60)
    assert answer["accelerator"] in ("kvm", "tcg"), answer
    assert answer["reason"].startswith("auto: "), answer
    assert agent.call("guest.accelerator", {"accelerator": "tcg"}) == {
        "accelerator": "tcg",
        "reason": "tcg requested",
    }


@pytest.mark.e2e
def test_failed_start_leaves_nothing_and_reports_qemu_stderr(
    lab: LabStatus, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    image = guest_image_dir()
    bogus = tmp_path / "bogus.qcow2"
    bogus.write_bytes(b"not a qcow2 image" * 64)
    agent = agent_session(settings(host))
    args = {
        "owner": "kqguest/dev/QemuGuest/bad",
        "name": "kqbad",
        "kernel": str(image / "vmlinuz"),
        "disks": [{"path": str(bogus), "format": "qcow2"}],
        "accelerator": "tcg",
    }
    with pytest.raises(AgentCallError, match="qcow2") as failure:
        agent.call("guest.start", args)
    assert "exited with" in str(failure.value)
    netns_ino = os.stat(f"/run/netns/{host.namespace}").st_ino
    run_dir = hoststate.ROOT / f"netns-{netns_ino}" / "guests" / "kqbad"
    assert run_dir.parent.is_dir() and not run_dir.exists()
    assert namespace_qemus(host.namespace) == []
    assert agent.call("guest.read", {"name": "kqbad", "owner": args["owner"]}) is None
    listing = sorted(p.name for p in run_dir.parent.iterdir())
    with pytest.raises(AgentCallError, match="tap kqnosuch does not exist"):
        agent.call(
            "guest.start",
            {**args, "disks": [], "nics": [{"tap": "kqnosuch", "mac": "52:54:00:00:00:01"}]},
        )
    assert sorted(p.name for p in run_dir.parent.iterdir()) == listing  # refused before
    assert namespace_qemus(host.namespace) == []


@pytest.mark.e2e
def test_two_guests_up_ping_crash_refresh_restart_replace_destroy(
    guest_run: GuestRun,
) -> None:
    stack, host, seen = guest_run.stack, guest_run.host, guest_run.seen

    stack.up()
    outs = stack.outputs()
    for i in (1, 2):
        seen.append((outs[f"g{i}_pid"], f"kqg{i}"))
    for i in (1, 2):
        pid, run_dir = outs[f"g{i}_pid"], Path(outs[f"g{i}_run_dir"])
        assert is_guest(pid, f"kqg{i}"), cmdline(pid)
        argv = cmdline(pid)
        assert "-daemonize" in argv and "-nographic" not in argv
        assert outs[f"g{i}_status"] == "running"
        assert outs[f"g{i}_accelerator"] == "tcg"
        assert outs[f"g{i}_macs"] == [f"52:54:00:6b:71:0{i}"]
        assert outs[f"g{i}_console_socket"] == str(run_dir / "console.sock")
        assert outs[f"g{i}_qmp_socket"] == str(run_dir / "qmp.sock")
        assert (run_dir / "qemu.pid").read_text().strip() == str(pid)
        meta = json.loads((run_dir / "guest.json").read_text())
        assert meta["owner"] == f"kqguest/dev/QemuGuest/g{i}"
        assert meta["argv"] == argv
        assert meta["argv_sha256"] == qemu_argv.argv_hash(argv)
        # the netns-inode keyed run dir: this host's namespace, not the root one
        assert run_dir.parent.parent.name.startswith("netns-")
        assert str(os.stat("/proc/self/ns/net").st_ino) not in run_dir.parent.parent.name
    assert {json.loads((Path(outs["g1_run_dir"]) / "guest.json").read_text())["pid"]} == {
        outs["g1_pid"]
    }

    ping_ok(outs["g1_console_socket"], "10.0.1.12")
    stack.preview_no_changes()

    # QEMU dies behind Pulumi's back: refresh drops it, up starts it again.
    old_pid = outs["g1_pid"]
    kill_guest(old_pid, "kqg1")
    refresh = stack.refresh()
    assert "deleted" in refresh.stdout, refresh.stdout
    names = [r["urn"].rsplit("::", 1)[-1] for r in stack.resources("QemuGuest")]
    assert names == ["g2"], names
    stack.up()
    outs = stack.outputs()
    seen.append((outs["g1_pid"], "kqg1"))
    assert outs["g1_pid"] != old_pid and is_guest(outs["g1_pid"], "kqg1")
    ping_ok(outs["g1_console_socket"], "10.0.1.12")
    ping_ok(outs["g2_console_socket"], "10.0.1.11")
    stack.preview_no_changes()

    # Memory cannot change live: preview says update, up restarts that guest only.
    stack.pulumi("config", "set", "g1_memory", "192")  # not .config(): it passes --stack after "--"
    preview = stack.preview()
    assert "1 to update" in preview.stdout and "to replace" not in preview.stdout, preview.stdout
    g2_pid = outs["g2_pid"]
    stack.up()
    outs = stack.outputs()
    seen.append((outs["g1_pid"], "kqg1"))
    argv = cmdline(outs["g1_pid"])
    assert argv[argv.index("-m") + 1] == "192", argv
    assert outs["g2_pid"] == g2_pid and is_guest(g2_pid, "kqg2")

    run_dirs = [Path(outs["g1_run_dir"]), Path(outs["g2_run_dir"])]
    stack.destroy()
    assert namespace_qemus(host.namespace) == []
    for pid, name in seen:
        assert not is_guest(pid, name), (pid, name)
    for run_dir in run_dirs:
        assert not run_dir.exists(), run_dir
    assert stack.resources("QemuGuest") == []
