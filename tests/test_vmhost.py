"""The lab's VM host, without booting it: its cloud-init seed and its QEMU command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kvmnet_lab.lab.naming import LabNames
from kvmnet_lab.lab.vmhost import (
    MAC,
    VmHostError,
    accelerator,
    qemu_argv,
    seed_files,
    vm_address,
)


def test_the_seed_pins_the_labs_keys_and_a_static_lan_address(tmp_path: Path) -> None:
    names = LabNames.for_name("vmunit", 42)
    key = tmp_path / "ssh_host_ed25519_key"
    key.write_text("PRIVATE\n")
    key.with_suffix(".pub").write_text("ssh-ed25519 AAAAhost lab-vm\n")
    files = seed_files(names, "ssh-ed25519 AAAAclient lab", key)

    assert files["user-data"].startswith(b"#cloud-config\n")
    user = yaml.safe_load(files["user-data"])
    assert user["disable_root"] is False
    assert user["ssh_authorized_keys"] == ["ssh-ed25519 AAAAclient lab"]
    assert user["ssh_keys"] == {
        "ed25519_private": "PRIVATE\n", "ed25519_public": "ssh-ed25519 AAAAhost lab-vm",
    }  # fmt: skip
    assert user["ssh_genkeytypes"] == ["ed25519"]  # no other host key than the pinned one
    (nic,) = yaml.safe_load(files["network-config"])["config"]
    assert (nic["name"], nic["mac_address"]) == ("eth0", MAC)
    assert nic["subnets"] == [
        {"type": "static", "address": "198.18.42.101/24", "gateway": "198.18.42.254"}
    ]
    assert vm_address(names) == "198.18.42.101"


def test_qemu_boots_the_overlay_with_the_seed_on_the_labs_tap(tmp_path: Path) -> None:
    argv = qemu_argv(tmp_path, Path("/img"), "tcg")
    line = " ".join(argv)
    assert "accel=tcg" in line and "-cpu" not in argv
    assert f"file={tmp_path / 'disk.qcow2'},format=qcow2,if=virtio" in line
    assert line.index("disk.qcow2") < line.index("seed.iso")  # the root is /dev/vda
    assert "tap,id=lan,ifname=vm,script=no,downscript=no" in line
    assert "-daemonize" not in argv  # the lab keeps QEMU's own PID


def test_the_accelerator_is_tcg_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVMNET_VM_ACCEL", raising=False)
    assert accelerator() == "tcg"
    monkeypatch.setenv("KVMNET_VM_ACCEL", "kvm")
    assert accelerator() == "kvm"
    monkeypatch.setenv("KVMNET_VM_ACCEL", "hvf")
    with pytest.raises(VmHostError, match="KVMNET_VM_ACCEL"):
        accelerator()
