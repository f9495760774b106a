"""Test guests: qemu argv, the serial console protocol, and two real guests pinging."""

from __future__ import annotations

import os
import pty
import secrets
import select
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kvmnet_lab.testing import (
    GuestConsole,
    GuestNic,
    guest_image_dir,
    qemu_argv,
    start_guest,
    stop_guest,
)

# -- qemu_argv ------------------------------------------------------------------------


def test_qemu_argv_builds_a_detached_guest_with_taps() -> None:
    argv = qemu_argv(
        kernel="/img/vmlinuz",
        initrd="/img/initrd.img",
        serial_socket="/run/g1,serial.sock",
        serial_log="/run/g1.log",
        qmp_socket="/run/g1.qmp",
        pidfile="/run/g1.pid",
        ip="10.0.1.11/24",
        gw="10.0.1.1",
        name="g1",
        nics=[GuestNic("vif1.0", "52:54:00:AA:00:01"), GuestNic("vif1.1", "52:54:00:aa:01:01")],
        accel="tcg",
    )
    assert argv[0] == "qemu-system-x86_64"
    assert "-nographic" not in argv and "-daemonize" not in argv

    def after(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert after("-accel") == "tcg"
    assert after("-m") == "128"
    assert after("-display") == "none"
    assert {"-nodefaults", "-no-user-config"} <= set(argv)
    assert after("-kernel") == "/img/vmlinuz"
    assert after("-initrd") == "/img/initrd.img"
    append = after("-append").split()
    assert "console=ttyS0" in append
    assert "kvmnet.ip=10.0.1.11/24" in append
    assert "kvmnet.gw=10.0.1.1" in append
    assert "kvmnet.name=g1" in append
    # A comma in a path is doubled, QEMU's escape inside an option list.
    assert after("-chardev") == (
        "socket,id=s0,path=/run/g1,,serial.sock,server=on,wait=off,logfile=/run/g1.log"
    )
    assert after("-serial") == "chardev:s0"
    assert after("-qmp") == "unix:/run/g1.qmp,server=on,wait=off"
    assert after("-pidfile") == "/run/g1.pid"
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert netdevs == [
        "tap,id=n0,ifname=vif1.0,script=no,downscript=no",
        "tap,id=n1,ifname=vif1.1,script=no,downscript=no",
    ]
    assert devices == [
        "virtio-net-pci,netdev=n0,mac=52:54:00:aa:00:01",
        "virtio-net-pci,netdev=n1,mac=52:54:00:aa:01:01",
    ]


def test_qemu_argv_kvm_and_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"kernel": "k", "initrd": "i", "serial_socket": "s"}
    monkeypatch.delenv("KVMNET_ACCEL", raising=False)
    assert qemu_argv(**base)[qemu_argv(**base).index("-accel") + 1] == "tcg"
    monkeypatch.setenv("KVMNET_ACCEL", "kvm")
    argv = qemu_argv(**base)
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-cpu") + 1] == "host"
    assert "kvmnet.ip" not in " ".join(argv)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ip": "10.0.1.11"},  # no prefix
        {"ip": "10.0.1.300/24"},
        {"gw": "fe80::1"},
        {"name": "bad name"},
        {"nics": [GuestNic("a-name-far-too-long", "52:54:00:00:00:01")]},
        {"nics": [GuestNic("tap0", "52:54:00:00:00")]},
        {"accel": "hvf"},
        {"extra_append": ["a b"]},
    ],
)
def test_qemu_argv_rejects_bad_input(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        qemu_argv(kernel="k", initrd="i", serial_socket="s", **kwargs)  # type: ignore[arg-type]


# -- GuestConsole against a local shell on a pty (fast, no QEMU) -----------------------


@dataclass
class _PtyShell:
    """A UNIX socket server whose one client talks to a shell on a pty, like QEMU's serial."""

    path: Path
    shell: list[str]
    proc: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            self.shell, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PS1": "# ", "TERM": "vt100"},
        )
        os.close(slave)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(self.path))
        srv.listen(1)
        self._thread = threading.Thread(target=self._pump, args=(srv, master), daemon=True)
        self._thread.start()

    def _pump(self, srv: socket.socket, master: int) -> None:
        conn, _ = srv.accept()
        try:
            while not self._stop.is_set():
                r, _, _ = select.select([conn, master], [], [], 0.2)
                if conn in r:
                    data = conn.recv(4096)
                    if not data:
                        return
                    os.write(master, data)
                if master in r:
                    try:
                        out = os.read(master, 4096)
                    except OSError:
                        return
                    conn.sendall(out)
        finally:
            conn.close()
            srv.close()
            os.close(master)

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None:
            stop_guest(self.proc, timeout=5)
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def pty_console(tmp_path: Path) -> Iterator[GuestConsole]:
    busybox = shutil.which("busybox")
    shell = [busybox, "sh", "-i"] if busybox else ["/bin/sh", "-i"]
    srv = _PtyShell(tmp_path / "console.sock", shell)
    srv.start()
    try:
        with GuestConsole(srv.path) as con:
            con.wait_ready(10)
            yield con
    finally:
        srv.stop()


def test_console_run_reports_status_and_output(pty_console: GuestConsole) -> None:
    assert pty_console.run("true").status == 0
    assert pty_console.run("false").status == 1
    assert pty_console.run("(exit 7)").status == 7
    r = pty_console.run("echo 'a b'; echo \"it's\"; printf 'no-newline'")
    assert (r.status, r.output) == (0, "a b\nit's\nno-newline")
    assert pty_console.run(":").output == ""
    r = pty_console.run("echo one\necho two")  # a multi-line command
    assert (r.status, r.output) == (0, "one\ntwo\n")
    # The typed line contains the marker's format string, never the printed marker.
    r = pty_console.run("echo __KVMNET_E_x_0__")
    assert r.output == "__KVMNET_E_x_0__\n"


def test_console_run_times_out_with_tail(pty_console: GuestConsole) -> None:
    with pytest.raises(TimeoutError, match="did not finish"):
        pty_console.run("echo slow-start; sleep 5", timeout=1)
    # The console is still usable afterwards.
    assert pty_console.run("echo after", timeout=10).output == "after\n"


def test_console_connect_timeout(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="cannot connect"):
        GuestConsole(tmp_path / "absent.sock", connect_timeout=0.3)


# -- two real guests on a bridge in a private namespace --------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class _Guest:
    name: str
    address: str
    console: GuestConsole
    log: Path


@pytest.fixture(scope="module")
def two_guests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[_Guest]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, taps)")
    image = guest_image_dir()  # installs qemu, busybox-static, cpio when missing
    work = tmp_path_factory.mktemp("guests")
    ns = f"kg-{secrets.token_hex(4)}"
    procs: list[subprocess.Popen[bytes]] = []
    consoles: list[GuestConsole] = []
    ns_created = False
    try:
        _ip("netns", "add", ns)
        ns_created = True
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", ns, "link", "set", "br0", "up")
        specs = [("g1", "10.0.1.11", "kgtap1"), ("g2", "10.0.1.12", "kgtap2")]
        for _name, _addr, tap in specs:
            _ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
            _ip("-n", ns, "link", "set", tap, "master", "br0")
            _ip("-n", ns, "link", "set", tap, "up")
        for i, (name, addr, tap) in enumerate(specs, 1):
            sock = work / f"{name}.serial"
            argv = qemu_argv(
                kernel=image / "vmlinuz",
                initrd=image / "initrd.img",
                serial_socket=sock,
                serial_log=work / f"{name}.console.log",
                pidfile=work / f"{name}.pid",
                ip=f"{addr}/24",
                name=name,
                nics=[GuestNic(tap, f"52:54:00:6b:67:{i:02x}")],
            )
            procs.append(
                start_guest(ns, argv, log_path=work / f"{name}.qemu.log", wait_for=sock)
            )
        guests = []
        for name, addr, _tap in specs:
            con = GuestConsole(work / f"{name}.serial")
            consoles.append(con)
            guests.append(_Guest(name, addr, con, work / f"{name}.console.log"))
        for g in guests:
            g.console.wait_ready(180)
        yield guests
    finally:
        for con in consoles:
            con.close()
        for p in procs:
            stop_guest(p)
        if ns_created:
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.e2e
def test_guests_ping_each_other_and_not_an_absent_address(two_guests: list[_Guest]) -> None:
    g1, g2 = two_guests
    r = g1.console.run(f"ping -c 2 -W 2 {g2.address}", timeout=30)
    assert r.status == 0, r.output
    assert f"PING {g2.address}" in r.output
    assert "2 packets transmitted, 2 packets received, 0% packet loss" in r.output

    r = g1.console.run("ping -c 2 -W 2 10.0.1.99", timeout=30)
    assert r.status != 0, r.output
    assert "100% packet loss" in r.output


@pytest.mark.e2e
def test_guest_console_status_and_config(two_guests: list[_Guest]) -> None:
    g1, g2 = two_guests
    assert g1.console.run("true").status == 0
    assert g1.console.run("false").status == 1
    assert g1.console.run("hostname").output == "g1\n"
    assert g2.console.run("hostname").output == "g2\n"
    r = g2.console.run("ip -4 addr show dev eth0")
    assert r.status == 0 and "inet 10.0.1.12/24" in r.output, r.output
    assert "KVMNET-GUEST-READY g1" in g1.log.read_text(errors="replace")
