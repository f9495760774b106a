"""A QEMU guest's spec: its fields, each field's rule and default, and the rules over several.

`check` in the provider (resources/guest.py) and the agent (agent/guests/) run the same rules;
pure standard library.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from . import validate
from .sockets import outside_run_dir
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
DISK_SIZE_GIB = (1, 65536)
SEED_MAX_BYTES = 4 * 1024 * 1024  # a cidata ISO of user-data, meta-data, network-config
ISO_MAGIC_OFFSET = 32769  # "CD001" of the first volume descriptor (sector 16, byte 1)
DEFAULT_QEMU = "qemu-system-x86_64"


# --- single fields -----------------------------------------------------------------------
def guest_name(value: object) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or value in (".", ".."):
        raise InvalidInput(f"must be 1-32 characters from [A-Za-z0-9_.-], got {value!r}")
    return value


def host_path(value: object) -> str:
    """An absolute path on the host of safe characters, no `..`, no empty components."""
    if not isinstance(value, str) or not PATH_RE.fullmatch(value) or len(value) > 4096:
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
    if not isinstance(value, str) or len(value) > 200 or not CPU_RE.fullmatch(value):
        raise InvalidInput(f"must be a QEMU CPU model such as host or qemu64,+ssse3, got {value!r}")
    return value


def qemu_binary(value: object) -> str:
    if not isinstance(value, str) or not QEMU_RE.fullmatch(value) or ".." in value.split("/"):
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


def base_format(value: object) -> str:
    return _choice(value, DISK_FORMATS)


def seed_iso(value: object) -> bytes:
    """The cloud-init seed (base64 on the wire): an ISO9660 image the provider built."""
    if not isinstance(value, str) or len(value) > SEED_MAX_BYTES * 4 // 3 + 4:
        raise InvalidInput(f"must be base64 text of at most {SEED_MAX_BYTES} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("must be base64 text") from None
    if data[ISO_MAGIC_OFFSET : ISO_MAGIC_OFFSET + 5] != b"CD001":
        raise InvalidInput("is not an ISO9660 image")
    return data


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
    # QEMU drops root for this user once set up; unset: a user of the guest's own, made by
    # the agent; root: QEMU stays root (only when asked for).
    "run_as": (validate.user_name, None),
    # A copy-on-write overlay of base_image, made by the agent, is the first (boot) disk.
    "base_image": (host_path, None),
    "base_format": (base_format, "qcow2"),
    "disk_size_gib": (_int(*DISK_SIZE_GIB), None),  # grow the overlay to this size
    "keep_disk": (validate.boolean, False),  # delete leaves the overlay
    # The cloud-init NoCloud seed the provider built from cloud_init, a read-only CD-ROM.
    "seed_iso": (seed_iso, None),
}


def cross_check(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules over several fields, as (property, reason)."""
    failures = []
    if not spec.get("kernel") and not spec.get("disks") and not spec.get("base_image"):
        failures.append(("kernel", "or base_image or disks is needed: nothing to boot"))
    if spec.get("disk_size_gib") is not None and not spec.get("base_image"):
        failures.append(("disk_size_gib", "needs base_image (it sizes the overlay)"))
    attached = [d["path"] for d in spec.get("disks") or []]
    if spec.get("base_image") and spec["base_image"] in attached:
        failures.append(("base_image", "is also in disks: a base image is never written to"))
    for key in ("initrd", "cmdline"):
        if spec.get(key) is not None and not spec.get("kernel"):
            failures.append((key, "needs kernel (direct boot)"))
    if spec.get("cpu") == "host" and spec.get("accelerator") == "tcg":
        failures.append(("cpu", "host needs KVM; with accelerator tcg leave cpu unset"))
    sockets = [spec.get("console_socket"), spec.get("qmp_socket")]
    if sockets[0] is not None and sockets[0] == sockets[1]:
        failures.append(("qmp_socket", "must differ from console_socket"))
    failures.extend(outside_run_dir(spec))
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
