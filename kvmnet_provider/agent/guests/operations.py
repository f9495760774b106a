"""The agent's guest.* operations: start (idempotent, all or nothing), read, stop."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...spec import validate
from ...spec.guest import DEFAULT_QEMU, cpu_model, guest_name, normalise_spec, qemu_binary
from ..errors import AgentError
from . import disks, qemu_user, socket_rules, taps, users
from .argv import argv_hash, build_argv, guest_paths
from .kvm import qemu_path, resolve_accelerator
from .process import live_pid, signal_if_ours, stop_process, tail, wait_gone
from .qmp import qmp
from .rundir import load_meta, locked, not_ours, remove_run_dir, save_meta, state

if TYPE_CHECKING:
    from ...spec.wire import AcceleratorChoice, GuestState, GuestStopped


def start(args: dict[str, Any]) -> GuestState:
    """Start the guest (idempotent): all or nothing; on failure nothing is left behind.
    A running guest asked for with another command line or disk size is powered down
    (stop_timeout) and started again on the same overlay and seed."""
    spec = normalise_spec(args)
    try:
        return _start(spec)
    except BaseException:
        users.discard(spec)  # unless its QEMU still runs
        raise


def _start(spec: dict[str, Any]) -> GuestState:
    name, owner = spec["name"], spec["owner"]
    for key in ("kernel", "initrd"):
        if spec.get(key) and not Path(spec[key]).is_file():
            raise AgentError(
                "missing",
                f"{key} {spec[key]} is not a file on this host; copy it there or fix the path "
                f"(the guest's {key}; stack config: kvmnet:guestImage or the guest's {key})",
            )
    for disk in spec["disks"]:
        if not Path(disk["path"]).exists():
            raise AgentError(
                "missing",
                f"disk {disk['path']} does not exist on this host; copy it there or fix the path",
            )
    if spec.get("base_image"):  # before a running guest is stopped to restart it
        disks.check_base(spec["base_image"], spec["base_format"], name)
    qemu_path(spec["qemu"])
    qemu_user.check(spec.get("run_as"))
    spec["run_as"] = users.runs_as(spec)  # the guest's own user unless run_as says
    tap_indexes = taps.check(spec["nics"])
    with locked(name) as root:
        run_dir = root / name
        meta = load_meta(run_dir)
        if run_dir.exists() and (meta is None or meta.get("owner") != owner):
            if meta is not None or live_pid(run_dir, name, None) is not None:
                raise not_ours(run_dir, meta, owner)
        accel, reason = resolve_accelerator(spec["accelerator"], spec["qemu"], spec["cpu"])
        paths = guest_paths(run_dir, spec)
        socket_rules.inside_run_dir(run_dir, paths)
        paths.update({k: v for k, v in disks.wanted_paths(name, spec).items() if v})
        argv = build_argv(spec, paths, accel)
        digest, disk_key = argv_hash(argv), disks.disk_key(spec)
        if meta is not None:
            pid = live_pid(run_dir, name, meta)
            if pid is not None and not restart_needed(meta, digest, disk_key):
                if meta.get("pid") != pid:  # launched by an agent that died before noting it
                    meta["pid"] = pid
                    save_meta(run_dir, meta)
                return state(run_dir, meta, pid)  # already running as asked
            stop_process(run_dir, name, meta, spec["stop_timeout"])
        remove_run_dir(run_dir, meta)
        users.ensure(spec)  # before its files are made the user's
        made_disk = disks.prepare(spec)  # the overlay and the seed, before QEMU opens them
        try:
            for key in ("console_socket", "qmp_socket"):
                existing = Path(paths[key])
                if existing.exists() and not existing.is_socket():
                    raise AgentError("conflict", f"{key} {existing} exists and is not a socket")
            run_dir.mkdir(mode=0o700)
        except BaseException:
            disks.release(name, owner, keep_disk=not made_disk)
            raise
        meta = {
            "owner": owner,
            "name": name,
            "argv": argv,
            "argv_sha256": digest,
            "accelerator": accel,
            "accelerator_reason": reason,
            "nics": spec["nics"],
            "tap_indexes": tap_indexes,
            "pid": None,
            "started": time.time(),
            "disk_key": disk_key,
            **{k: v for k, v in paths.items() if k != "run_dir"},
        }
        save_meta(run_dir, meta)
        try:
            return _launch(run_dir, meta, argv, name)
        except BaseException:
            _cleanup_failed(run_dir, name, meta)
            disks.release(name, owner, keep_disk=not made_disk)
            raise


def restart_needed(meta: dict[str, Any], digest: str, disk_key: str | None) -> bool:
    """Whether the running guest must be restarted on its disk to be what is asked: another
    argv or disk, or a tap made again since its QEMU opened it (the guest is cut off)."""
    return (meta.get("argv_sha256"), meta.get("disk_key")) != (digest, disk_key) or bool(
        taps.replaced(meta)
    )


def _launch(run_dir: Path, meta: dict[str, Any], argv: list[str], name: str) -> GuestState:
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
                f"QEMU for guest {name} did not finish starting within 60 s: " + tail(log),
            ) from None
    if proc.returncode != 0:
        raise AgentError(
            "failed", f"QEMU for guest {name} exited with {proc.returncode}: {tail(log)}"
        )
    pid = live_pid(run_dir, name, None)
    if pid is None:
        raise AgentError("failed", f"QEMU for guest {name} started but is not running: {tail(log)}")
    meta["pid"] = pid
    save_meta(run_dir, meta)
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
    return state(run_dir, meta, pid)


def _cleanup_failed(run_dir: Path, name: str, meta: dict[str, Any]) -> None:
    pidfile = str(run_dir / "qemu.pid")
    pid = live_pid(run_dir, name, meta)
    if pid is not None:
        signal_if_ours(pid, name, pidfile, signal.SIGKILL)
        wait_gone(pid, name, pidfile, 5.0)
    remove_run_dir(run_dir, meta)


def read(args: dict[str, Any]) -> GuestState | None:
    """The running guest, or None when it is gone (or what runs under that name is not ours)."""
    name, owner = guest_name(args["name"]), validate.owner(args["owner"])
    with locked(name) as root:
        run_dir = root / name
        meta = load_meta(run_dir)
        if meta is None or meta.get("owner") != owner:
            return None
        pid = live_pid(run_dir, name, meta)
        if pid is None:
            return None
        return state(run_dir, meta, pid)


def stop(args: dict[str, Any]) -> GuestStopped:
    """Power the guest down (bounded), then quit/SIGTERM/SIGKILL; remove its run dir."""
    name, owner = guest_name(args["name"]), validate.owner(args["owner"])
    stop_timeout = validate.int_range(args.get("stop_timeout", 10), 1, 300)
    keep_disk = validate.boolean(args.get("keep_disk", False))
    with locked(name) as root:
        run_dir = root / name
        meta = load_meta(run_dir)
        if meta is None:
            if run_dir.exists() and live_pid(run_dir, name, None) is not None:
                raise not_ours(run_dir, meta)
            kept = disks.release(name, owner, keep_disk)  # the guest died: its disks go now
            users.remove(owner)
            return _stopped(False, "absent", kept)
        if meta.get("owner") != owner:
            raise not_ours(run_dir, meta)
        how = stop_process(run_dir, name, meta, stop_timeout)
        remove_run_dir(run_dir, meta)
        kept = disks.release(name, owner, keep_disk)
        users.remove(owner)
        return _stopped(True, how, kept)


def _stopped(deleted: bool, how: str, kept_disk: str | None) -> GuestStopped:
    answer: GuestStopped = {"deleted": deleted, "how": how}
    if kept_disk:  # only then: the answer is otherwise what it always was
        answer["kept_disk"] = kept_disk
    return answer


def accelerator_op(args: dict[str, Any]) -> AcceleratorChoice:
    qemu = qemu_binary(args.get("qemu") or DEFAULT_QEMU)
    cpu = cpu_model(args["cpu"]) if args.get("cpu") else None
    qemu_path(qemu)
    accel, reason = resolve_accelerator(args.get("accelerator") or "auto", qemu, cpu)
    return {"accelerator": accel, "reason": reason}


def handlers() -> dict[str, Callable[[dict[str, Any]], Any]]:
    return {
        "guest.start": start,
        "guest.read": read,
        "guest.stop": stop,
        "guest.accelerator": accelerator_op,
    }
