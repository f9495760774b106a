"""Start and stop tiny QEMU test guests (Debian kernel + busybox initramfs).

The image comes from ``scripts/build-guest-image``; its ``/init`` reads ``kvmnet.ip``,
``kvmnet.gw`` and ``kvmnet.name`` from the kernel command line, configures ``eth0`` and runs
a shell on the serial console (see :mod:`kvmnet_lab.testing.console`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kvmnet_provider.agent.guests.argv import build_argv
from kvmnet_provider.spec.guest import nics as valid_nics

from ..lab.netns import pid_alive
from ..toolchain import REPO_ROOT

QEMU = "qemu-system-x86_64"
ACCELS = ("tcg", "kvm")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_REPO_ROOT = REPO_ROOT
BUILD_SCRIPT = _REPO_ROOT / "scripts" / "build-guest-image"


@dataclass(frozen=True)
class GuestNic:
    """A NIC attached to an existing tap device."""

    tap: str
    mac: str


def default_accel() -> str:
    """The accelerator for test guests: ``$KVMNET_ACCEL`` if set, else TCG.

    KVM is not the default: on nested hosts a guest under ``-enable-kvm`` was seen spinning
    at 100% CPU without output, whereas TCG boots reliably.
    """
    accel = os.environ.get("KVMNET_ACCEL", "tcg").strip().lower() or "tcg"
    if accel not in ACCELS:
        raise ValueError(f"KVMNET_ACCEL must be one of {ACCELS}, not {accel!r}")
    return accel


def qemu_argv(
    *,
    kernel: str | Path,
    initrd: str | Path,
    serial_socket: str | Path,
    ip: str | None = None,
    gw: str | None = None,
    name: str = "guest",
    nics: Sequence[GuestNic] = (),
    serial_log: str | Path | None = None,
    qmp_socket: str | Path | None = None,
    pidfile: str | Path | None = None,
    memory_mib: int = 128,
    accel: str | None = None,
    daemonize: bool = False,
    extra_append: Sequence[str] = ("quiet",),
    qemu: str = QEMU,
) -> list[str]:
    """Build the argv of a test guest with the agent's builder. Pure: validates, touches
    nothing.

    ``ip`` is ``A.B.C.D/NN`` for eth0 (the first NIC); ``gw`` an optional default route.
    ``accel`` is ``"tcg"`` or ``"kvm"`` (default: :func:`default_accel`).
    """
    accel = default_accel() if accel is None else accel
    if accel not in ACCELS:
        raise ValueError(f"accel must be one of {ACCELS}, not {accel!r}")
    if not _HOSTNAME.fullmatch(name):
        raise ValueError(f"name: invalid guest name {name!r}")
    if memory_mib < 32:
        raise ValueError(f"memory_mib: {memory_mib} is too small")
    append = ["console=ttyS0", "panic=-1", f"kvmnet.name={name}"]
    if ip is not None:
        iface = ipaddress.ip_interface(ip)  # raises ValueError with the value in it
        if iface.version != 4 or "/" not in ip:
            raise ValueError(f"ip: expected A.B.C.D/NN, got {ip!r}")
        append.append(f"kvmnet.ip={iface.with_prefixlen}")
    if gw is not None:
        gw_addr = ipaddress.ip_address(gw)
        if gw_addr.version != 4:
            raise ValueError(f"gw: expected an IPv4 address, got {gw!r}")
        append.append(f"kvmnet.gw={gw_addr}")
    for word in extra_append:
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"extra_append: invalid kernel argument {word!r}")
        append.append(word)

    try:
        nic_list = valid_nics([{"tap": n.tap, "mac": n.mac} for n in nics])
    except ValueError as exc:
        raise ValueError(f"nics{exc}") from None
    spec = {
        "qemu": qemu,
        "name": name,
        "memory_mib": memory_mib,
        "vcpus": 1,
        "kernel": str(kernel),
        "initrd": str(initrd),
        "cmdline": " ".join(append),
        "nics": nic_list,
    }
    paths = {
        "console_socket": str(serial_socket),
        "console_log": "" if serial_log is None else str(serial_log),
        "qmp_socket": "" if qmp_socket is None else str(qmp_socket),
        "pidfile": "" if pidfile is None else str(pidfile),
    }
    # The agent's own builder; a test guest also exits instead of rebooting (panic=-1).
    return [*build_argv(spec, paths, accel, daemonize=daemonize), "-no-reboot"]


def guest_image_dir() -> Path:
    """Build (or find cached) the test guest image; returns the dir with vmlinuz, initrd.img.

    ``$KVMNET_GUEST_IMAGE_DIR`` points at a prebuilt image and skips the build script.
    """
    preset = os.environ.get("KVMNET_GUEST_IMAGE_DIR")
    if preset:
        d = Path(preset)
    else:
        proc = subprocess.run(
            [str(BUILD_SCRIPT)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(f"{BUILD_SCRIPT} printed no directory")
        d = Path(lines[-1])
    for f in ("vmlinuz", "initrd.img"):
        if not (d / f).is_file():
            raise RuntimeError(f"guest image {d} has no {f}")
    return d


def start_guest(
    netns: str | None,
    argv: Sequence[str],
    *,
    log_path: str | Path | None = None,
    wait_for: str | Path | None = None,
    timeout: float = 10.0,
) -> subprocess.Popen[bytes]:
    """Start QEMU (``argv`` from :func:`qemu_argv`, not daemonized), in ``netns`` if given.

    ``ip netns exec`` execs the command, so the returned process *is* QEMU. QEMU's stdout
    and stderr go to ``log_path`` (or are discarded). With ``wait_for`` (e.g. the serial
    socket), waits until that path exists and raises, after stopping QEMU, if it exits first.
    """
    if "-daemonize" in argv:
        raise ValueError("start_guest runs QEMU in the foreground; do not pass -daemonize")
    full = list(argv)
    if netns is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", netns):
            raise ValueError(f"netns: invalid namespace name {netns!r}")
        full = ["ip", "netns", "exec", netns, *full]
    log = open(log_path, "ab") if log_path is not None else None
    try:
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log is not None:
            log.close()
    if wait_for is not None:
        deadline = time.monotonic() + timeout
        target = Path(wait_for)
        while not target.exists():
            if proc.poll() is not None:
                detail = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
                raise RuntimeError(f"QEMU exited with {proc.returncode}: {detail}")
            if time.monotonic() >= deadline:
                stop_guest(proc)
                raise TimeoutError(f"{target} did not appear within {timeout}s")
            time.sleep(0.05)
    return proc


def stop_guest(proc: subprocess.Popen[bytes] | int, timeout: float = 10.0) -> None:
    """Stop one QEMU by PID: SIGTERM, wait up to ``timeout``, then SIGKILL.

    Takes the Popen from :func:`start_guest` (reaped) or a bare PID (e.g. from a pidfile).
    """
    if isinstance(proc, subprocess.Popen):
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        return
    pid = int(proc)
    if pid <= 1:
        raise ValueError(f"refusing to signal PID {pid}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # reap it if it is our child; otherwise just watch it go
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        deadline = time.monotonic() + 5.0
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
