"""The Debian bookworm guest image (``scripts/build-debian-image``) for tests and benches.

A directory with ``disk.qcow2`` (an ext4 filesystem, no partition table), ``vmlinuz`` and
``initrd.img``: a guest boots the kernel directly with :data:`DEBIAN_CMDLINE` and the disk as
its first virtio disk, and cloud-init (NoCloud only) configures it from its seed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from ..toolchain import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-debian-image"
IMAGE_FILES = ("disk.qcow2", "vmlinuz", "initrd.img")
# `quiet` keeps the kernel's messages off the serial console (slow under TCG); cloud-init
# still writes its own lines there.
DEBIAN_CMDLINE = "root=/dev/vda console=ttyS0 quiet"
# What cloud-init prints on the console when its last stage is done.
CLOUD_INIT_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at")
LOGIN_PROMPT = re.compile(r"\S+ login: ")
# cloud-init first boot under TCG takes minutes (python, four stages, SSH host keys).
BOOT_TIMEOUT = 900.0


def debian_image_dir() -> Path:
    """Build (or find cached) the Debian image; returns its directory.

    ``$KVMNET_DEBIAN_IMAGE_DIR`` points at a prebuilt image and skips the build script.
    """
    return _built_image(os.environ.get("KVMNET_DEBIAN_IMAGE_DIR"), [])


def vmhost_image_dir() -> Path:
    """Build (or find cached) the lab's VM host variant (``build-debian-image --vmhost``).

    ``$KVMNET_VMHOST_IMAGE_DIR`` points at a prebuilt one and skips the build script.
    """
    return _built_image(os.environ.get("KVMNET_VMHOST_IMAGE_DIR"), ["--vmhost"])


def _built_image(preset: str | None, args: list[str]) -> Path:
    if preset:
        d = Path(preset)
    else:
        proc = subprocess.run([str(BUILD_SCRIPT), *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(f"{BUILD_SCRIPT} printed no directory")
        d = Path(lines[-1])
    for f in IMAGE_FILES:
        if not (d / f).is_file():
            raise RuntimeError(f"Debian image {d} has no {f}")
    return d


def file_sha256(path: Path) -> str:
    """The checksum of a (large) file, read in chunks: proves a base image untouched."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
