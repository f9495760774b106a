"""QEMU guests on the host: start detached, find, and stop, with ownership recorded.

Each guest has a run directory, ``<hoststate root>/netns-<inode>/guests/<name>/``, keyed by the
network namespace like the rest of the host state, so lab hosts sharing a filesystem keep
separate guests. It holds:

- ``qemu.pid``   QEMU's own pidfile (``-pidfile``);
- ``guest.json`` the owner, the argv and its hash, the accelerator used and why;
- ``qemu.log``   what QEMU printed before it detached (its errors);
- ``console.sock``, ``console.log``, ``qmp.sock`` unless other socket paths were asked for.

QEMU runs with ``-daemonize``, so it outlives the agent, the SSH session and the provider.
A PID is only ever signalled after /proc/PID/cmdline shows it is QEMU running with our
``-name`` and our ``-pidfile``.

Everything down to ``build_argv`` is pure standard library: the controller imports the
validators from here, and the agent checks every request again with the same code.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import hoststate, qemu_user, rundir, socket_rules, validate
from .errors import AgentError
from .netlink import iproute_class
from .validate import InvalidInput

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
PATH_RE = re.compile(r"^/[A-Za-z0-9_.+@/-]*$")
QEMU_RE = re.compile(r"^(/[A-Za-z0-9_.+@-]+)*/?[A-Za-z0-9_.+-]+$")
CPU_RE = re.compile(r"^[A-Za-z0-9_.+=-]+(,[A-Za-z0-9_.+=-]+)*$")
ACCELERATORS = ("kvm", "tcg", "auto")
DISK_FORMATS = ("raw", "qcow2")
DISK_INTERFACES = ("virtio", "ide")
NIC_MODELS = ("virtio-net-pci", "e1000")
MEMORY_MIB = (64, 1048576)
VCPUS = (1, 64)
CMDLINE_MAX = 1024
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes, NUL included
DEFAULT_QEMU = "qemu-system-x86_64"
UNSUPPORTED_FEATURE = "doesn't support requested feature"
# seccomp: QEMU's default denials plus obsolete syscalls and scheduler/resource control.
# Measured with QEMU 7.2 and -daemonize: spawn=deny kills it (SIGSYS at the fork) and
# elevateprivileges=deny (or =children) makes it exit 1, so those two stay allowed.
SANDBOX = "on,obsolete=deny,resourcecontrol=deny"


# --- validation (controller and host) -------------------------------------------------------
def guest_name(value: object) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or value in (".", ".."):
        raise InvalidInput(f"must be 1-32 characters from [A-Za-z0-9_.-], got {value!r}")
    return value


def host_path(value: object) -> str:
    """An absolute path on the host of safe characters, no `..`, no empty components."""
    if not isinstance(value, str) or not PATH_RE.match(value) or len(value) > 4096:
        raise InvalidInput(f"must be an absolute path of [A-Za-z0-9_.+@/-], got {value!r}")
    parts = value.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"must be a plain absolute path (no '.', '..' or '//'), got {value!r}")
    return value


def socket_path(value: object) -> str:
    path = host_path(value)
    if len(path.encode()) > SOCKET_PATH_MAX:
        raise InvalidInput(
            f"is {len(path)} characters; a UNIX socket path may have at most {SOCKET_PATH_MAX}"
        )
    return path


def kernel_cmdline(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"must be a string, got {value!r}")
    if len(value) > CMDLINE_MAX:
        raise InvalidInput(f"is {len(value)} characters long; at most {CMDLINE_MAX}")
    bad = sorted({c for c in value if not " " <= c <= "~"})
    if bad:
        raise InvalidInput(f"must be printable ASCII on one line; it contains {bad!r}")
    return value


def accelerator(value: object) -> str:
    if value not in ACCELERATORS:
        raise InvalidInput(f"must be one of {', '.join(ACCELERATORS)}, got {value!r}")
    return str(value)


def cpu_model(value: object) -> str:
    if not isinstance(value, str) or len(value) > 200 or not CPU_RE.match(value):
        raise InvalidInput(f"must be a QEMU CPU model such as host or qemu64,+ssse3, got {value!r}")
    return value


def qemu_binary(value: object) -> str:
    if not isinstance(value, str) or not QEMU_RE.match(value) or ".." in value.split("/"):
        raise InvalidInput(f"must be a command name or an absolute path, got {value!r}")
    return value


def _choice(value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidInput(f"must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _known_keys(item: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise InvalidInput(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(allowed)})")


def disks(value: object) -> list[dict[str, str]]:
    """[{path, format, interface}] in boot order; a path at most once."""
    if not isinstance(value, (list, tuple)):
        raise InvalidInput(f"must be a list, got {value!r}")
    out: list[dict[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidInput(f"[{i}] must be an object with path and format, got {item!r}")
        _known_keys(item, ("path", "format", "interface"), f"[{i}]")
        try:
            disk = {
                "path": host_path(item.get("path")),
                "format": _choice(item.get("format"), DISK_FORMATS),
                "interface": _choice(item.get("interface") or "virtio", DISK_INTERFACES),
            }
        except InvalidInput as exc:
            raise InvalidInput(f"[{i}]: {exc}") from None
        out.append(disk)
    paths = [d["path"] for d in out]
    if len(set(paths)) != len(paths):
        raise InvalidInput(f"names a disk path twice: {paths}")
    return out


def nics(value: object) -> list[dict[str, str]]:
    """[{tap, mac, model}] in PCI order; each tap and each MAC at most once."""
    if not isinstance(value, (list, tuple)):
        raise InvalidInput(f"must be a list, got {value!r}")
    out: list[dict[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidInput(f"[{i}] must be an object with tap and mac, got {item!r}")
        _known_keys(item, ("tap", "mac", "model"), f"[{i}]")
        try:
            nic = {
                "tap": validate.ifname(item.get("tap")),
                "mac": validate.mac(item.get("mac")),
                "model": _choice(item.get("model") or "virtio-net-pci", NIC_MODELS),
            }
        except InvalidInput as exc:
            raise InvalidInput(f"[{i}]: {exc}") from None
        out.append(nic)
    for key in ("tap", "mac"):
        seen = [n[key] for n in out]
        if len(set(seen)) != len(seen):
            raise InvalidInput(f"uses a {key} twice: {seen}")
    return out


def _int(low: int, high: int) -> Callable[[object], int]:
    return lambda v: validate.int_range(v, low, high)


# name -> (normaliser, default); None as default means optional.
SPEC_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "name": (guest_name, None),
    "memory_mib": (_int(*MEMORY_MIB), 128),
    "vcpus": (_int(*VCPUS), 1),
    "disks": (disks, []),
    "kernel": (host_path, None),
    "initrd": (host_path, None),
    "cmdline": (kernel_cmdline, None),
    "nics": (nics, []),
    "accelerator": (accelerator, "auto"),
    "cpu": (cpu_model, None),
    "console_socket": (socket_path, None),
    "qmp_socket": (socket_path, None),
    "qemu": (qemu_binary, DEFAULT_QEMU),
    "stop_timeout": (_int(1, 300), 10),
    "run_as": (validate.user_name, None),  # QEMU drops root for this user once set up
}


def cross_check(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules over several fields, as (property, reason)."""
    failures = []
    if not spec.get("kernel") and not spec.get("disks"):
        failures.append(("kernel", "or disks is needed: the guest has nothing to boot"))
    for key in ("initrd", "cmdline"):
        if spec.get(key) is not None and not spec.get("kernel"):
            failures.append((key, "needs kernel (direct boot)"))
    if spec.get("cpu") == "host" and spec.get("accelerator") == "tcg":
        failures.append(("cpu", "host needs KVM; with accelerator tcg leave cpu unset"))
    sockets = [spec.get("console_socket"), spec.get("qmp_socket")]
    if sockets[0] is not None and sockets[0] == sockets[1]:
        failures.append(("qmp_socket", "must differ from console_socket"))
    return failures


def normalise_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate a whole guest spec again (on the host); raise InvalidInput naming the field."""
    spec: dict[str, Any] = {}
    for key, (normalise, default) in SPEC_FIELDS.items():
        value = raw.get(key)
        if value is None:
            if key == "name":
                raise InvalidInput("name is required")
            spec[key] = default
            continue
        try:
            spec[key] = normalise(value)
        except InvalidInput as exc:
            raise InvalidInput(f"{key} {exc}") from None
    failures = cross_check(spec)
    if failures:
        raise InvalidInput("; ".join(f"{p} {r}" for p, r in failures))
    spec["owner"] = validate.owner(raw.get("owner"))
    return spec


# --- argv ------------------------------------------------------------------------------------
def _opt(value: str) -> str:
    """A value inside QEMU's key=value,... option syntax: a comma is doubled."""
    return value.replace(",", ",,")


def guest_paths(run_dir: Path, spec: dict[str, Any]) -> dict[str, str]:
    return {
        "run_dir": str(run_dir),
        "pidfile": str(run_dir / "qemu.pid"),
        "meta": str(run_dir / "guest.json"),
        "qemu_log": str(run_dir / "qemu.log"),
        "console_log": str(run_dir / "console.log"),
        "console_socket": spec.get("console_socket") or str(run_dir / "console.sock"),
        "qmp_socket": spec.get("qmp_socket") or str(run_dir / "qmp.sock"),
    }


def cpu_for(spec: dict[str, Any], accel: str) -> str | None:
    """The -cpu the guest gets under `accel`: the one asked for, else host under KVM."""
    cpu = spec.get("cpu")
    if accel == "kvm":
        return cpu or "host"
    return None if cpu == "host" else cpu


def build_argv(spec: dict[str, Any], paths: dict[str, str], accel: str) -> list[str]:
    """QEMU's argv for a normalised spec, resolved paths and a concrete accelerator. Pure."""
    if accel not in ("kvm", "tcg"):
        raise InvalidInput(f"accelerator must be resolved to kvm or tcg, got {accel!r}")
    argv = [
        spec["qemu"],
        "-name",
        spec["name"],
        "-accel",
        accel,
    ]
    cpu = cpu_for(spec, accel)
    if cpu:
        argv += ["-cpu", cpu]
    argv += [
        "-m",
        str(spec["memory_mib"]),
        "-smp",
        str(spec["vcpus"]),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-sandbox",
        SANDBOX,
    ]
    if spec.get("run_as"):  # after opening its disks, taps, sockets and pidfile as root
        argv += ["-runas", spec["run_as"]]
    if spec.get("kernel"):
        argv += ["-kernel", spec["kernel"]]
        if spec.get("initrd"):
            argv += ["-initrd", spec["initrd"]]
        if spec.get("cmdline") is not None:
            argv += ["-append", spec["cmdline"]]
    for disk in spec.get("disks") or []:
        argv += [
            "-drive",
            f"file={_opt(disk['path'])},format={disk['format']},if={disk['interface']}",
        ]
    argv += [
        "-chardev",
        f"socket,id=s0,path={_opt(paths['console_socket'])},server=on,wait=off,"
        f"logfile={_opt(paths['console_log'])}",
        "-serial",
        "chardev:s0",
        "-qmp",
        f"unix:{_opt(paths['qmp_socket'])},server=on,wait=off",
    ]
    for i, nic in enumerate(spec.get("nics") or []):
        argv += [
            "-netdev",
            f"tap,id=n{i},ifname={nic['tap']},script=no,downscript=no",
            "-device",
            f"{nic['model']},netdev=n{i},mac={nic['mac']}",
        ]
    argv += ["-pidfile", paths["pidfile"], "-daemonize"]
    return argv


def argv_hash(argv: list[str]) -> str:
    return hashlib.sha256(json.dumps(argv).encode()).hexdigest()


# --- the accelerator ---------------------------------------------------------------------
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


def _qemu_path(qemu: str) -> str:
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
    argv = [_qemu_path(qemu), "-accel", "kvm"]
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


# --- processes -------------------------------------------------------------------------------
def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0:1] == ["Z"]


def is_our_qemu(pid: int, name: str, pidfile: str) -> bool:
    """PID runs QEMU with `-name NAME` and `-pidfile PIDFILE` (a live, non-zombie process)."""
    if pid <= 1:
        return False
    argv = _cmdline(pid)
    if not argv or _is_zombie(pid):
        return False
    pairs = set(zip(argv, argv[1:], strict=False))
    return (
        os.path.basename(argv[0]).startswith("qemu")
        and ("-name", name) in pairs
        and ("-pidfile", pidfile) in pairs
    )


def _pidfile_pid(pidfile: str) -> int | None:
    try:
        text = Path(pidfile).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _wait_gone(pid: int, name: str, pidfile: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_our_qemu(pid, name, pidfile):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(pid: int, name: str, pidfile: str, sig: int) -> None:
    if is_our_qemu(pid, name, pidfile):  # checked right before every signal
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# --- QMP -------------------------------------------------------------------------------------
def qmp(path: str, commands: list[str], timeout: float = 3.0) -> list[Any]:
    """Run QMP commands in order over the UNIX socket; their `return` values.

    Uses the `qemu.qmp` library when the host has it, else a minimal synchronous exchange.
    A `quit` may end the connection before its answer: that counts as done.
    """
    try:
        from qemu.qmp import QMPClient
    except ImportError:
        return _qmp_plain(path, commands, timeout)

    async def exchange() -> list[Any]:
        client = QMPClient("kvmnet")
        results: list[Any] = []
        await asyncio.wait_for(client.connect(path), timeout)
        try:
            for command in commands:
                try:
                    results.append(await asyncio.wait_for(client.execute(command), timeout))
                except Exception:
                    if command != "quit":
                        raise
                    results.append({})
        finally:
            try:
                await asyncio.wait_for(client.disconnect(), timeout)
            except Exception:
                pass
        return results

    try:
        return asyncio.run(exchange())
    except Exception as exc:
        raise OSError(f"QMP on {path}: {exc.__class__.__name__}: {exc}") from None


def _qmp_plain(path: str, commands: list[str], timeout: float) -> list[Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        stream = sock.makefile("rwb")

        def answer() -> dict[str, Any]:
            while True:
                line = stream.readline()
                if not line:
                    raise OSError(f"QMP on {path}: connection closed")
                doc = json.loads(line)
                if "event" not in doc:  # events may arrive at any time
                    return dict(doc)

        greeting = answer()
        if "QMP" not in greeting:
            raise OSError(f"QMP on {path}: unexpected greeting {greeting}")
        results: list[Any] = []
        for command in ["qmp_capabilities", *commands]:
            stream.write(json.dumps({"execute": command}).encode() + b"\n")
            stream.flush()
            try:
                doc = answer()
            except OSError:
                if command == "quit":
                    results.append({})
                    break
                raise
            if "error" in doc:
                raise OSError(f"QMP {command}: {doc['error'].get('desc')}")
            if command != "qmp_capabilities":
                results.append(doc.get("return"))
        return results


def _status(path: str) -> str:
    try:
        status = qmp(path, ["query-status"])[0]
    except (OSError, IndexError) as exc:
        return f"unknown ({exc})"
    return str(status.get("status")) if isinstance(status, dict) else "unknown"


# --- the run directory -------------------------------------------------------------------
def guests_root() -> Path:
    return rundir.private_dir(hoststate.namespace_dir() / "guests")


@contextmanager
def _locked() -> Iterator[Path]:
    """The guests directory, held under an exclusive lock (all agents on this host)."""
    root = guests_root()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield root
    finally:
        os.close(fd)


def _load_meta(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(rundir.read_text(run_dir / "guest.json") or "null")
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _save_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    rundir.replace_text(run_dir / "guest.json", json.dumps(meta, sort_keys=True, indent=1))


def _live_pid(run_dir: Path, name: str, meta: dict[str, Any] | None) -> int | None:
    pidfile = str(run_dir / "qemu.pid")
    for pid in (_pidfile_pid(pidfile), (meta or {}).get("pid")):
        if isinstance(pid, int) and is_our_qemu(pid, name, pidfile):
            return pid
    return None


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:]


def _stop_process(
    run_dir: Path, name: str, meta: dict[str, Any] | None, stop_timeout: float
) -> str:
    """Stop our QEMU in this run dir, politely first. Returns how it stopped."""
    pid = _live_pid(run_dir, name, meta)
    if pid is None:
        return "not running"
    pidfile = str(run_dir / "qemu.pid")
    qmp_path = str((meta or {}).get("qmp_socket") or run_dir / "qmp.sock")
    try:
        qmp(qmp_path, ["system_powerdown"])
        if _wait_gone(pid, name, pidfile, stop_timeout):
            return "powered down"
    except OSError:
        pass
    try:
        qmp(qmp_path, ["quit"])
        if _wait_gone(pid, name, pidfile, 5.0):
            return "quit over QMP"
    except OSError:
        pass
    _signal(pid, name, pidfile, signal.SIGTERM)
    if _wait_gone(pid, name, pidfile, 5.0):
        return "SIGTERM"
    _signal(pid, name, pidfile, signal.SIGKILL)
    if _wait_gone(pid, name, pidfile, 5.0):
        return "SIGKILL"
    raise AgentError("failed", f"QEMU {pid} of guest {name} survived SIGKILL")


def _remove_run_dir(run_dir: Path, meta: dict[str, Any] | None) -> None:
    for key in ("console_socket", "qmp_socket"):
        path = (meta or {}).get(key)
        if isinstance(path, str) and not path.startswith(str(run_dir) + "/"):
            p = Path(path)
            if p.is_socket():  # a socket we asked QEMU to create elsewhere
                p.unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def _state(run_dir: Path, meta: dict[str, Any], pid: int) -> dict[str, Any]:
    return {
        "pid": pid,
        "status": _status(meta["qmp_socket"]),
        "accelerator": meta["accelerator"],
        "accelerator_reason": meta["accelerator_reason"],
        "console_socket": meta["console_socket"],
        "console_log": meta["console_log"],
        "qmp_socket": meta["qmp_socket"],
        "macs": [n["mac"] for n in meta.get("nics") or []],
        "run_dir": str(run_dir),
        "argv_sha256": meta["argv_sha256"],
    }


def _not_ours(run_dir: Path, meta: dict[str, Any] | None) -> AgentError:
    holder = f"kvmnet resource {meta['owner']}" if meta and meta.get("owner") else "unknown"
    return AgentError(
        "conflict",
        f"guest {run_dir.name} exists on this host and belongs to {holder} ({run_dir}); "
        "kvmnet will not touch it",
    )


# --- operations ------------------------------------------------------------------------------
def start(args: dict[str, Any]) -> dict[str, Any]:
    """Start the guest (idempotent): all or nothing; on failure nothing is left behind."""
    spec = normalise_spec(args)
    name, owner = spec["name"], spec["owner"]
    for key in ("kernel", "initrd"):
        if spec.get(key) and not Path(spec[key]).is_file():
            raise AgentError("missing", f"{key} {spec[key]} is not a file on this host")
    for disk in spec["disks"]:
        if not Path(disk["path"]).exists():
            raise AgentError("missing", f"disk {disk['path']} does not exist on this host")
    _qemu_path(spec["qemu"])
    qemu_user.check(spec.get("run_as"))
    _check_taps(spec["nics"])
    with _locked() as root:
        run_dir = root / name
        meta = _load_meta(run_dir)
        if run_dir.exists() and (meta is None or meta.get("owner") != owner):
            if meta is not None or _live_pid(run_dir, name, None) is not None:
                raise _not_ours(run_dir, meta)
        accel, reason = resolve_accelerator(spec["accelerator"], spec["qemu"], spec["cpu"])
        paths = guest_paths(run_dir, spec)
        socket_rules.inside_run_dir(run_dir, paths)
        argv = build_argv(spec, paths, accel)
        digest = argv_hash(argv)
        if meta is not None:
            pid = _live_pid(run_dir, name, meta)
            if pid is not None and meta.get("argv_sha256") == digest:
                return _state(run_dir, meta, pid)  # already running as asked
            _stop_process(run_dir, name, meta, spec["stop_timeout"])
        _remove_run_dir(run_dir, meta)
        for key in ("console_socket", "qmp_socket"):
            existing = Path(paths[key])
            if existing.exists() and not existing.is_socket():
                raise AgentError("conflict", f"{key} {existing} exists and is not a socket")
        run_dir.mkdir(mode=0o700)
        meta = {
            "owner": owner,
            "name": name,
            "argv": argv,
            "argv_sha256": digest,
            "accelerator": accel,
            "accelerator_reason": reason,
            "nics": spec["nics"],
            "pid": None,
            "started": time.time(),
            **{k: v for k, v in paths.items() if k != "run_dir"},
        }
        _save_meta(run_dir, meta)
        try:
            return _launch(run_dir, meta, argv, name)
        except BaseException:
            _cleanup_failed(run_dir, name, meta)
            raise


def _check_taps(nics: list[dict[str, str]]) -> None:
    """Each NIC's tap exists and is a tap: given a missing name, QEMU would quietly create a
    tap of its own, on no bridge, and the guest would start cut off."""
    if not nics:
        return
    IPRoute = iproute_class()  # the agent has it; the controller never gets here

    with IPRoute() as ipr:
        for nic in nics:
            found = ipr.link_lookup(ifname=nic["tap"])
            if not found:
                raise AgentError(
                    "missing", f"tap {nic['tap']} does not exist on this host (create it first)"
                )
            kind = ipr.get_links(found[0])[0].get(("linkinfo", "kind"))
            if kind != "tun":
                raise AgentError(
                    "invalid", f"{nic['tap']} is a {kind or 'plain'} link, not a tap device"
                )


def _launch(run_dir: Path, meta: dict[str, Any], argv: list[str], name: str) -> dict[str, Any]:
    log = run_dir / "qemu.log"
    with open(log, "wb") as out:
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                close_fds=True,
                start_new_session=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            raise AgentError(
                "failed",
                f"QEMU for guest {name} did not finish starting within 60 s: " + _tail(log),
            ) from None
    if proc.returncode != 0:
        raise AgentError(
            "failed", f"QEMU for guest {name} exited with {proc.returncode}: {_tail(log)}"
        )
    pid = _live_pid(run_dir, name, None)
    if pid is None:
        raise AgentError(
            "failed", f"QEMU for guest {name} started but is not running: {_tail(log)}"
        )
    meta["pid"] = pid
    _save_meta(run_dir, meta)
    deadline = time.monotonic() + 10
    while True:  # the QMP socket answers once QEMU's main loop runs
        try:
            qmp(meta["qmp_socket"], ["query-status"])
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise AgentError(
                    "failed", f"QMP of guest {name} did not answer within 10 s: {exc}"
                ) from None
            time.sleep(0.1)
    return _state(run_dir, meta, pid)


def _cleanup_failed(run_dir: Path, name: str, meta: dict[str, Any]) -> None:
    pidfile = str(run_dir / "qemu.pid")
    pid = _live_pid(run_dir, name, meta)
    if pid is not None:
        _signal(pid, name, pidfile, signal.SIGKILL)
        _wait_gone(pid, name, pidfile, 5.0)
    _remove_run_dir(run_dir, meta)


def read(args: dict[str, Any]) -> dict[str, Any] | None:
    """The running guest, or None when it is gone (or what runs under that name is not ours)."""
    name, owner = guest_name(args["name"]), validate.owner(args["owner"])
    with _locked() as root:
        run_dir = root / name
        meta = _load_meta(run_dir)
        if meta is None or meta.get("owner") != owner:
            return None
        pid = _live_pid(run_dir, name, meta)
        if pid is None:
            return None
        return _state(run_dir, meta, pid)


def stop(args: dict[str, Any]) -> dict[str, Any]:
    """Power the guest down (bounded), then quit/SIGTERM/SIGKILL; remove its run dir."""
    name, owner = guest_name(args["name"]), validate.owner(args["owner"])
    stop_timeout = validate.int_range(args.get("stop_timeout", 10), 1, 300)
    with _locked() as root:
        run_dir = root / name
        meta = _load_meta(run_dir)
        if meta is None:
            if run_dir.exists() and _live_pid(run_dir, name, None) is not None:
                raise _not_ours(run_dir, meta)
            return {"deleted": False, "how": "absent"}
        if meta.get("owner") != owner:
            raise _not_ours(run_dir, meta)
        how = _stop_process(run_dir, name, meta, stop_timeout)
        _remove_run_dir(run_dir, meta)
        return {"deleted": True, "how": how}


def accelerator_op(args: dict[str, Any]) -> dict[str, str]:
    qemu = qemu_binary(args.get("qemu") or DEFAULT_QEMU)
    cpu = cpu_model(args["cpu"]) if args.get("cpu") else None
    _qemu_path(qemu)
    accel, reason = resolve_accelerator(args.get("accelerator") or "auto", qemu, cpu)
    return {"accelerator": accel, "reason": reason}


def handlers() -> dict[str, Callable[[dict[str, Any]], Any]]:
    return {
        "guest.start": start,
        "guest.read": read,
        "guest.stop": stop,
        "guest.accelerator": accelerator_op,
    }
