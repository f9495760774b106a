"""Our QEMU processes: found by pidfile, recognised by their command line, stopped politely.

A PID is only ever signalled after /proc/PID/cmdline shows it is QEMU running with our
``-name`` and our ``-pidfile``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from ..errors import AgentError
from .qmp import qmp


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0:1] == ["Z"]


def is_our_qemu(pid: int, name: str, pidfile: str) -> bool:
    """PID runs QEMU with `-name NAME` and `-pidfile PIDFILE` (a live, non-zombie process)."""
    if pid <= 1:
        return False
    argv = cmdline(pid)
    if not argv or is_zombie(pid):
        return False
    pairs = set(zip(argv, argv[1:], strict=False))
    return (
        os.path.basename(argv[0]).startswith("qemu")
        and ("-name", name) in pairs
        and ("-pidfile", pidfile) in pairs
    )


def pidfile_pid(pidfile: str) -> int | None:
    try:
        text = Path(pidfile).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def wait_gone(pid: int, name: str, pidfile: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_our_qemu(pid, name, pidfile):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def signal_if_ours(pid: int, name: str, pidfile: str, sig: int) -> None:
    if is_our_qemu(pid, name, pidfile):  # checked right before every signal
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def live_pid(run_dir: Path, name: str, meta: dict[str, Any] | None) -> int | None:
    pidfile = str(run_dir / "qemu.pid")
    for pid in (pidfile_pid(pidfile), (meta or {}).get("pid")):
        if isinstance(pid, int) and is_our_qemu(pid, name, pidfile):
            return pid
    return None


def tail(path: Path, limit: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:]


def stop_process(run_dir: Path, name: str, meta: dict[str, Any] | None, stop_timeout: float) -> str:
    """Stop our QEMU in this run dir, politely first. Returns how it stopped."""
    pid = live_pid(run_dir, name, meta)
    if pid is None:
        return "not running"
    pidfile = str(run_dir / "qemu.pid")
    qmp_path = str((meta or {}).get("qmp_socket") or run_dir / "qmp.sock")
    try:
        qmp(qmp_path, ["system_powerdown"])
        if wait_gone(pid, name, pidfile, stop_timeout):
            return "powered down"
    except OSError:
        pass
    try:
        qmp(qmp_path, ["quit"])
        if wait_gone(pid, name, pidfile, 5.0):
            return "quit over QMP"
    except OSError:
        pass
    signal_if_ours(pid, name, pidfile, signal.SIGTERM)
    if wait_gone(pid, name, pidfile, 5.0):
        return "SIGTERM"
    signal_if_ours(pid, name, pidfile, signal.SIGKILL)
    if wait_gone(pid, name, pidfile, 5.0):
        return "SIGKILL"
    raise AgentError("failed", f"QEMU {pid} of guest {name} survived SIGKILL")
