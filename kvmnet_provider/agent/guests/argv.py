"""QEMU's argv for a guest spec: pure, one builder for the agent and the lab's test guests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ...spec.validate import InvalidInput

# seccomp: QEMU's default denials plus obsolete syscalls and scheduler/resource control.
# Measured with QEMU 7.2 and -daemonize: spawn=deny kills it (SIGSYS at the fork) and
# elevateprivileges=deny (or =children) makes it exit 1, so those two stay allowed.
SANDBOX = "on,obsolete=deny,resourcecontrol=deny"


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


def build_argv(
    spec: dict[str, Any], paths: dict[str, str], accel: str, daemonize: bool = True
) -> list[str]:
    """QEMU's argv for a normalised spec, resolved paths and a concrete accelerator. Pure.

    `paths` needs console_socket; console_log, qmp_socket and pidfile are used when present
    (the agent always gives them, see guest_paths), disk_path (the overlay of base_image) and
    seed_path (the cloud-init seed) when the guest has them. `daemonize=False` keeps QEMU in the
    foreground, as the lab's test guests run.
    """
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
    if paths.get("disk_path"):  # the overlay of base_image: the first disk, the boot disk
        argv += ["-drive", f"file={_opt(paths['disk_path'])},format=qcow2,if=virtio"]
    for disk in spec.get("disks") or []:
        argv += [
            "-drive",
            f"file={_opt(disk['path'])},format={disk['format']},if={disk['interface']}",
        ]
    if paths.get("seed_path"):  # the cloud-init NoCloud seed (volume id cidata)
        argv += [
            "-drive",
            f"file={_opt(paths['seed_path'])},format=raw,if=ide,media=cdrom,readonly=on",
        ]
    chardev = f"socket,id=s0,path={_opt(paths['console_socket'])},server=on,wait=off"
    if paths.get("console_log"):
        chardev += f",logfile={_opt(paths['console_log'])}"
    argv += ["-chardev", chardev, "-serial", "chardev:s0"]
    if paths.get("qmp_socket"):
        argv += ["-qmp", f"unix:{_opt(paths['qmp_socket'])},server=on,wait=off"]
    for i, nic in enumerate(spec.get("nics") or []):
        argv += [
            "-netdev",
            f"tap,id=n{i},ifname={nic['tap']},script=no,downscript=no",
            "-device",
            f"{nic['model']},netdev=n{i},mac={nic['mac']}",
        ]
    if paths.get("pidfile"):
        argv += ["-pidfile", paths["pidfile"]]
    if daemonize:
        argv.append("-daemonize")
    return argv


def argv_hash(argv: list[str]) -> str:
    return hashlib.sha256(json.dumps(argv).encode()).hexdigest()
