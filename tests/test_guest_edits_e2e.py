"""Day-2 edits of a guest booted from a base image, through the real engine on a lab host: memory,
vcpus and the kernel command line are updates that restart QEMU on the same overlay (a mark
written to the disk survives), a larger disk_size_gib grows that overlay in place (the guest
sees the new size), a smaller one is refused at preview; a base that would let the guest read a
host file, or that others could swap, is refused at `up` in one line. One guest, four boots."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing import GuestConsole, guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack
from test_guest_resource import cmdline, is_guest, kill_guest, namespace_qemus, settings

pytestmark = pytest.mark.e2e
NAME = "kqedit"
MIB = 1024 * 1024
MARK = "dd if=/dev/vda bs=512 count=1 2>/dev/null | grep -c KVMNET-EDIT-MARK || true"

PROGRAM = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources.guest import QemuGuest, QemuGuestArgs

cfg = pulumi.Config()
guest = QemuGuest(
    "g",
    QemuGuestArgs(
        connection=HostSettings(**{conn!r}),
        name={name!r},
        kernel={kernel!r},
        initrd={initrd!r},
        cmdline="console=ttyS0 quiet panic=-1 kvmnet.name={name}" + (cfg.get("extra") or ""),
        accelerator="tcg",
        memory_mib=cfg.get_int("memory") or 128,
        vcpus=cfg.get_int("vcpus") or 1,
        stop_timeout=2,
        base_image=cfg.require("base"),
        disk_size_gib=cfg.get_int("size"),
    ),
)
for key in ("pid", "console_socket", "disk_path"):
    pulumi.export(key, getattr(guest, key))
"""


def in_guest(console: str, command: str) -> str:
    with GuestConsole(console) as con:
        con.wait_ready(180)
        r = con.run(command, timeout=30)
    assert r.status == 0, r.output
    return r.output.split()[-1] if r.output.split() else ""


def qcow2(path: Path, *extra: str) -> Path:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), "64M"], check=True
    )
    return path


def virtual_size(path: str) -> int:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)["virtual-size"])


class EditRun:
    def __init__(self, stack: TestStack, lab: Lab, namespace: str) -> None:
        self.stack, self.lab, self.namespace = stack, lab, namespace
        self.seen: list[int] = []

    def up(self) -> dict[str, Any]:
        self.stack.up()
        outs = self.stack.outputs()
        self.seen.append(outs["pid"])
        assert is_guest(outs["pid"], NAME), cmdline(outs["pid"])
        return outs

    def preview_is_an_update(self, prop: str) -> None:
        preview = self.stack.preview()
        text = preview.stdout + preview.stderr
        assert "1 to update" in text and "to replace" not in text, text
        assert prop in text, text
        assert "DELETES" not in text, text

    def refused(self, path: Path, said: str) -> None:
        before = host_snapshot(self.lab, self.namespace)
        self.stack.config("base", str(path))
        failed = self.stack.up(check=False)
        text = failed.stdout + failed.stderr
        assert failed.returncode != 0, text
        lines = [line for line in text.splitlines() if said in line]
        assert lines, text
        assert f"guest {NAME}: " in lines[0] and "fix: " in lines[0], lines[0]
        assert "Traceback" not in text, text
        assert namespace_qemus(self.namespace) == []
        after = host_snapshot(self.lab, self.namespace)
        assert after == before, "\n".join(diff_snapshots(before, after))


@pytest.fixture
def edit_run(tmp_path: Path, lab: LabStatus, lab_api: Lab) -> Iterator[EditRun]:
    host = lab.hosts[0]
    image = guest_image_dir()
    program = textwrap.dedent(PROGRAM).format(
        conn=settings(host).to_props(),
        name=NAME,
        kernel=str(image / "vmlinuz"),
        initrd=str(image / "initrd.img"),
    )
    run = EditRun(TestStack(tmp_path / "ws", program, project="kqedit"), lab_api, host.namespace)
    try:
        yield run
    finally:
        run.stack.remove()
        for pid in run.seen:  # nothing may survive, even a failed test
            kill_guest(pid, NAME)


def test_edits_restart_the_guest_on_its_own_disk(edit_run: EditRun, tmp_path: Path) -> None:
    stack = edit_run.stack
    base = qcow2(tmp_path / "base.qcow2")
    before = host_snapshot(edit_run.lab, edit_run.namespace)
    stack.config("base", str(base))
    outs = edit_run.up()
    disk = outs["disk_path"]
    in_guest(
        outs["console_socket"],
        "echo KVMNET-EDIT-MARK | dd of=/dev/vda bs=512 count=1 conv=sync,fsync",
    )
    stack.preview_no_changes()

    # More memory: an update; QEMU restarts with it on the same overlay.
    stack.config("memory", "160")
    edit_run.preview_is_an_update("memory_mib")
    old_pid = outs["pid"]
    outs = edit_run.up()
    assert outs["pid"] != old_pid and not is_guest(old_pid, NAME)
    argv = cmdline(outs["pid"])
    assert argv[argv.index("-m") + 1] == "160", argv
    assert outs["disk_path"] == disk
    assert in_guest(outs["console_socket"], MARK) == "1"
    stack.preview_no_changes()  # the new PID is no diff

    # vcpus and the kernel command line: each an update in preview; one restart for both.
    stack.config("vcpus", "2")
    edit_run.preview_is_an_update("vcpus")
    stack.config("vcpus", "1")
    stack.config("extra", " kvmnet.edited=1")
    edit_run.preview_is_an_update("cmdline")
    stack.config("vcpus", "2")
    outs = edit_run.up()
    argv = cmdline(outs["pid"])
    assert argv[argv.index("-smp") + 1].startswith("2"), argv
    assert "kvmnet.edited=1" in argv[argv.index("-append") + 1], argv
    assert in_guest(outs["console_socket"], "grep -c kvmnet.edited=1 /proc/cmdline") == "1"
    assert in_guest(outs["console_socket"], MARK) == "1"

    # A larger disk grows the overlay in place: the guest sees it, the mark is still there.
    stack.config("size", "1")
    edit_run.preview_is_an_update("disk_size_gib")
    outs = edit_run.up()
    assert outs["disk_path"] == disk and virtual_size(disk) == 1024 * MIB
    assert in_guest(outs["console_socket"], "cat /sys/block/vda/size") == str(1024 * MIB // 512)
    assert in_guest(outs["console_socket"], MARK) == "1"
    stack.preview_no_changes()

    # A smaller one is refused at preview, naming the property and the rule.
    stack.pulumi("config", "rm", "size")
    refused = stack.preview(check=False)
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "disk_size_gib cannot be unset" in text, text
    assert "only grows" in text, text
    stack.config("size", "1")

    # Another base replaces the guest, and preview says the disk goes with it.
    other = qcow2(tmp_path / "other.qcow2")
    stack.config("base", str(other))
    preview = stack.preview()
    text = preview.stdout + preview.stderr
    assert "1 to replace" in text, text
    assert f"guest {NAME}: replacing it (base_image) DELETES its disk" in text, text
    assert disk in text, text
    stack.config("base", str(base))

    stack.destroy()
    assert namespace_qemus(edit_run.namespace) == []
    after = host_snapshot(edit_run.lab, edit_run.namespace)
    assert after == before, "\n".join(diff_snapshots(before, after))


def test_untrusted_bases_are_refused_at_up_in_one_line(edit_run: EditRun, tmp_path: Path) -> None:
    host_file = tmp_path / "host-secrets.raw"
    host_file.write_bytes(b"host secrets\n" * 4096)
    chained = qcow2(tmp_path / "chained.qcow2", "-b", str(host_file), "-F", "raw")
    edit_run.refused(chained, f"base_image {chained} has a backing file of its own")

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    base = qcow2(shared / "base.qcow2")
    edit_run.refused(base, f"the directory of base_image {shared} is writable by group or others")
