"""A guest from a base image through its own copy-on-write overlay, with a cloud-init seed:
the real engine, a lab host, the test image booted direct with the overlay as /dev/vda and the
seed as the CD-ROM /dev/sr0. Checked from outside the code under test: qemu-img info,
/proc/PID/cmdline, the files' modes, the guest's own shell, `pulumi stack export`."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
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
from test_connection_e2e import scan_for_secrets
from test_guest_resource import cmdline, is_guest, kill_guest, namespace_qemus, settings

pytestmark = pytest.mark.e2e
NAME = "kqdisk"
MIB = 1024 * 1024

PROGRAM = """
import pulumi
from kvmnet_provider import CloudInit
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
        cmdline="console=ttyS0 quiet panic=-1 kvmnet.name={name}",
        accelerator="tcg",
        stop_timeout=2,
        base_image=cfg.require("base"),
        disk_size_gib=cfg.get_int("size"),
        keep_disk=cfg.get_bool("keep") or False,
        cloud_init=CloudInit(
            user_data={{"hostname": {name!r}, "users": [{{"name": "ops", "passwd": {secret!r}}}]}},
        ),
    ),
)
for key in ("pid", "console_socket", "disk_path", "seed_path", "run_dir"):
    pulumi.export(key, getattr(guest, key))
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def img_info(path: str) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output", "json", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc: dict[str, Any] = json.loads(out)
    return doc


def in_guest(console: str, command: str, timeout: float = 30) -> str:
    with GuestConsole(console) as con:
        con.wait_ready(180)
        r = con.run(command, timeout=timeout)
    assert r.status == 0, r.output
    return r.output


class DiskRun:
    def __init__(self, stack: TestStack, lab: Lab, namespace: str, secret: str) -> None:
        self.stack, self.lab, self.namespace, self.secret = stack, lab, namespace, secret
        self.seen: list[int] = []
        self.logs: dict[str, str] = {}

    def up(self, label: str) -> dict[str, Any]:
        proc = self.stack.up()
        self.logs[label] = proc.stdout + proc.stderr
        outs = self.stack.outputs()
        self.seen.append(outs["pid"])
        assert is_guest(outs["pid"], NAME), cmdline(outs["pid"])
        return outs


@pytest.fixture
def disk_run(tmp_path: Path, lab: LabStatus, lab_api: Lab) -> Iterator[DiskRun]:
    host = lab.hosts[0]
    image = guest_image_dir()
    secret = "pw-" + secrets.token_hex(12)
    program = textwrap.dedent(PROGRAM).format(
        conn=settings(host).to_props(),
        name=NAME,
        kernel=str(image / "vmlinuz"),
        initrd=str(image / "initrd.img"),
        secret=secret,
    )
    run = DiskRun(
        TestStack(tmp_path / "ws", program, project="kqdisk"), lab_api, host.namespace, secret
    )
    try:
        yield run
    finally:
        run.stack.remove()
        for pid in run.seen:  # nothing may survive, even a failed test
            kill_guest(pid, NAME)


def test_overlay_seed_replace_keep_and_destroy(disk_run: DiskRun, tmp_path: Path) -> None:
    stack, ns = disk_run.stack, disk_run.namespace
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    base_sum = sha256(base)
    before = host_snapshot(disk_run.lab, ns)
    stack.config("base", str(base))

    outs = disk_run.up("up")
    inode = os.stat(f"/run/netns/{ns}").st_ino
    disk_dir = Path(f"/var/lib/kvmnet/netns-{inode}/guests/{NAME}")
    assert outs["disk_path"] == str(disk_dir / "disk.qcow2")
    assert outs["seed_path"] == str(disk_dir / "seed.iso")
    info = img_info(outs["disk_path"])
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 64 * MIB
    assert stat.S_IMODE(os.lstat(disk_dir).st_mode) == 0o700
    for path in (outs["disk_path"], outs["seed_path"]):
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, path
    argv = cmdline(outs["pid"])
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives == [
        f"file={outs['disk_path']},format=qcow2,if=virtio",
        f"file={outs['seed_path']},format=raw,if=ide,media=cdrom,readonly=on",
    ]

    # The guest sees the overlay as vda (64 MiB) and the seed as a read-only CD-ROM.
    console = outs["console_socket"]
    assert in_guest(console, "cat /sys/block/vda/size").split()[-1] == str(64 * MIB // 512)
    assert in_guest(console, "cat /sys/block/sr0/ro").split()[-1] == "1"
    seen = in_guest(
        console,
        "mkdir -p /mnt && mount -t iso9660 -o ro /dev/sr0 /mnt && ls /mnt && "
        "cat /mnt/meta-data && head -n 1 /mnt/user-data && grep -c ops /mnt/user-data && "
        "umount /mnt",
    )
    assert "meta-data" in seen and "user-data" in seen, seen
    assert f"local-hostname: {NAME}" in seen and f"instance-id: {NAME}-" in seen, seen
    assert "#cloud-config" in seen, seen
    # A mark on the overlay, to tell a new overlay from a kept one (fsync: a flush reaches
    # QEMU, which then writes the qcow2 mapping too; a SIGKILL must not lose it).
    in_guest(console, "echo KVMNET-DISK-MARK | dd of=/dev/vda bs=512 count=1 conv=sync,fsync")
    stack.preview_no_changes()

    # QEMU dies behind Pulumi's back: refresh drops the guest, up starts it again on the same
    # overlay (the mark is still there) with a fresh seed; then nothing is left to change.
    kill_guest(outs["pid"], NAME)
    disk_run.logs["refresh"] = stack.refresh().stdout
    assert not stack.resources("QemuGuest")
    outs = disk_run.up("up-again")
    mark = "dd if=/dev/vda bs=512 count=1 2>/dev/null | grep -c DISK-MARK || true"
    assert in_guest(outs["console_socket"], mark).split()[-1] == "1"
    assert Path(outs["seed_path"]).is_file()
    disk_run.logs["refresh-2"] = stack.refresh().stdout
    stack.preview_no_changes()

    # user-data is a secret: neither the state nor the logs hold it in plaintext.
    export = stack.pulumi("stack", "export").stdout
    disk_run.logs["export"] = export
    guest = [r for r in json.loads(export)["deployment"]["resources"] if r["urn"].endswith("::g")]
    assert guest and guest[0]["outputs"].get("cloud_init") is None
    assert "ciphertext" in json.dumps(guest[0]["inputs"]["cloud_init"])
    assert "ciphertext" in json.dumps(guest[0]["outputs"]["cloud_init_sha256"])

    # A larger size is an update: the same overlay, grown in place to 1 GiB (the mark stays).
    stack.config("size", "1")
    preview = stack.preview()
    assert "1 to update" in preview.stdout and "to replace" not in preview.stdout, preview.stdout
    assert "disk_size_gib" in preview.stdout, preview.stdout
    outs = disk_run.up("grow")
    assert img_info(outs["disk_path"])["virtual-size"] == 1024 * MIB
    assert img_info(outs["disk_path"])["backing-filename"] == str(base)
    console = outs["console_socket"]
    assert in_guest(console, "cat /sys/block/vda/size").split()[-1] == str(1024 * MIB // 512)
    assert in_guest(console, mark).split()[-1] == "1"

    # keep_disk changes in place; destroy then keeps the overlay (and only it).
    stack.config("keep", "true")
    preview = stack.preview()
    assert "1 to update" in preview.stdout and "to replace" not in preview.stdout, preview.stdout
    disk_run.logs["keep-up"] = stack.up().stdout
    destroyed = stack.destroy()
    disk_run.logs["keep-destroy"] = destroyed.stdout + destroyed.stderr
    said = f"guest {NAME}: keep_disk: its overlay stays at "
    assert said in disk_run.logs["keep-destroy"] and str(disk_dir) in disk_run.logs["keep-destroy"]
    assert namespace_qemus(ns) == []
    assert sorted(p.name for p in disk_dir.iterdir()) == ["disk.json", "disk.qcow2"]
    assert img_info(str(disk_dir / "disk.qcow2"))["backing-filename"] == str(base)
    assert sha256(base) == base_sum

    # up again takes the kept overlay back: the mark is there.
    outs = disk_run.up("up-kept")
    head = in_guest(
        outs["console_socket"], "dd if=/dev/vda bs=512 count=1 2>/dev/null | grep -c DISK-MARK"
    )
    assert head.split()[-1] == "1", head

    # Without keep_disk, destroy removes the overlay and the seed: the host is as before.
    stack.config("keep", "false")
    stack.up()
    disk_run.logs["destroy"] = stack.destroy().stdout
    assert not disk_dir.exists()
    # Nothing of the guests is left under netns-<inode> (the directory itself also holds the
    # host's boot records of other objects, which go with those objects).
    assert not disk_dir.parent.exists() or not any(disk_dir.parent.iterdir())
    assert sha256(base) == base_sum
    after = host_snapshot(disk_run.lab, ns)
    assert after == before, "\n".join(diff_snapshots(before, after))

    for path in (tmp_path / "ws").rglob("*"):  # the state, its backups and history
        if path.is_file() and path.name != "__main__.py" and path.stat().st_size < 50_000_000:
            disk_run.logs[str(path)] = path.read_bytes().decode(errors="replace")
    assert scan_for_secrets(disk_run.logs, [disk_run.secret]) == []


def test_a_missing_base_image_fails_up_in_one_line(disk_run: DiskRun) -> None:
    stack, ns = disk_run.stack, disk_run.namespace
    before = host_snapshot(disk_run.lab, ns)
    missing = "/var/lib/kvmnet-test-nowhere/base.qcow2"
    stack.config("base", missing)
    stack.preview()  # preview does not ask the host
    failed = stack.up(check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert f"base_image {missing} does not exist on this host" in text, text
    assert "Traceback" not in text, text
    assert [line for line in text.splitlines() if missing in line][0].count(missing) == 1
    assert namespace_qemus(ns) == []
    after = host_snapshot(disk_run.lab, ns)
    assert after == before, "\n".join(diff_snapshots(before, after))
