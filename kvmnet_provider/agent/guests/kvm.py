"""Does KVM really run guests on this host? A probe, and `auto` resolved once per process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from ...spec.guest import accelerator
from ..errors import AgentError

UNSUPPORTED_FEATURE = "doesn't support requested feature"

# Runs a vCPU through KVM's ioctls: real mode, `mov al,0x42; out 0x10,al; hlt`. Exits 0 when
# the vCPU halts after the port write. A constant, run as `python -c`, killed on timeout.
VCPU_PROBE = r"""
import ctypes, fcntl, mmap, os, struct, sys
def ioc(d, nr, size=0):
    return (d << 30) | (size << 16) | (0xAE << 8) | nr
kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
if fcntl.ioctl(kvm, ioc(0, 0x00)) != 12:
    sys.exit("KVM API version is not 12")
vm = fcntl.ioctl(kvm, ioc(0, 0x01), 0)
mem = mmap.mmap(-1, 0x1000)
code = b"\xb0\x42\xe6\x10\xf4"
mem[: len(code)] = code
addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
fcntl.ioctl(vm, ioc(1, 0x46, 32), struct.pack("IIQQQ", 0, 0, 0, 0x1000, addr))
vcpu = fcntl.ioctl(vm, ioc(0, 0x41), 0)
size = fcntl.ioctl(kvm, ioc(0, 0x04), 0)
run = mmap.mmap(vcpu, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
sregs = bytearray(312)
fcntl.ioctl(vcpu, ioc(2, 0x83, 312), sregs, True)
struct.pack_into("Q", sregs, 0, 0)
struct.pack_into("H", sregs, 12, 0)
fcntl.ioctl(vcpu, ioc(1, 0x84, 312), bytes(sregs))
regs = bytearray(144)
struct.pack_into("Q", regs, 17 * 8, 2)
fcntl.ioctl(vcpu, ioc(1, 0x82, 144), bytes(regs))
wrote = False
for _ in range(16):
    fcntl.ioctl(vcpu, ioc(0, 0x80), 0)
    reason = struct.unpack_from("I", run, 8)[0]
    if reason == 2:
        _, _, port, _, off = struct.unpack_from("BBHIQ", run, 32)
        wrote = wrote or (port == 0x10 and run[off] == 0x42)
    elif reason == 5:
        sys.exit(0 if wrote else "the vCPU halted without running the probe's code")
    else:
        sys.exit(f"unexpected KVM exit reason {reason}")
sys.exit("the vCPU never halted")
"""

_accel_cache: dict[tuple[str, str | None], tuple[str, str]] = {}


def qemu_path(qemu: str) -> str:
    found = qemu if qemu.startswith("/") else shutil.which(qemu)
    if not found or not os.access(found, os.X_OK):
        raise AgentError(
            "missing", f"{qemu} not found on this host (apt-get install qemu-system-x86)"
        )
    return found


def probe_kvm(qemu: str, cpu: str | None, timeout: float = 10.0) -> tuple[bool, str]:
    """Does KVM really run guests here? (ok, why). Three steps, each bounded.

    1. /dev/kvm opens read-write and speaks API version 12;
    2. a vCPU made with KVM's ioctls runs a few real-mode instructions to `hlt`;
    3. QEMU itself starts under `-accel kvm` with the CPU model the guest would get, prints
       no "host doesn't support requested feature" warning, and QMP's query-kvm says enabled.
    KVM exposed by a nested hypervisor can pass 1 and 2 yet hang a Linux guest; on such hosts
    step 3 fails (QEMU aborts on `-cpu host`, or cannot give the default model its features).
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"/dev/kvm cannot be opened: {exc.strerror}"
    os.close(fd)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", VCPU_PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False, f"a KVM vCPU did not reach hlt within {timeout:g} s"
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"a KVM vCPU probe failed: {detail}"
    argv = [qemu_path(qemu), "-accel", "kvm"]
    if cpu:
        argv += ["-cpu", cpu]
    argv += ["-m", "16", "-nodefaults", "-no-user-config", "-display", "none", "-S"]
    argv += ["-qmp", "stdio"]
    requests = "".join(
        json.dumps({"execute": c}) + "\n" for c in ("qmp_capabilities", "query-kvm", "quit")
    )
    try:
        proc = subprocess.run(argv, input=requests, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"QEMU under -accel kvm did not answer QMP within {timeout:g} s"
    stderr = proc.stderr.strip()
    if proc.returncode != 0:
        last = stderr.splitlines()[-1] if stderr else "no output"
        return False, f"QEMU under -accel kvm -cpu {cpu or 'default'} failed: {last}"
    if UNSUPPORTED_FEATURE in stderr:
        first = next(line for line in stderr.splitlines() if UNSUPPORTED_FEATURE in line)
        return False, f"KVM cannot give the guest CPU model {cpu or 'default'}: {first}"
    enabled = False
    for line in proc.stdout.splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        ret = doc.get("return") if isinstance(doc, dict) else None
        if isinstance(ret, dict) and "enabled" in ret:
            enabled = bool(ret.get("enabled")) and bool(ret.get("present"))
    if not enabled:
        return False, "QEMU's query-kvm did not report KVM enabled"
    return True, f"KVM probed working (vCPU probe and QEMU -cpu {cpu or 'default'})"


def resolve_accelerator(requested: str, qemu: str, cpu: str | None) -> tuple[str, str]:
    """(kvm|tcg, why). `auto` probes KVM once per agent process, qemu and CPU model."""
    requested = accelerator(requested)
    if requested != "auto":
        return requested, f"{requested} requested"
    key = (qemu, cpu or "host")
    if key not in _accel_cache:
        ok, why = probe_kvm(qemu, cpu or "host")
        _accel_cache[key] = ("kvm", f"auto: {why}") if ok else ("tcg", f"auto: {why}; using tcg")
    return _accel_cache[key]
