"""A guest's disk directory: the copy-on-write overlay of its base image, its cloud-init seed.

``/var/lib/kvmnet/guests/<name>/`` on a host (persistent: a kept overlay outlives a reboot, and
the host's own network namespace is the host). In any other network namespace (lab hosts
sharing one filesystem) ``/var/lib/kvmnet/netns-<inode>/guests/<name>/``, keyed by the
namespace as the run directories under /run/kvmnet are. It holds:

- ``disk.qcow2`` the overlay: ``qemu-img create -f qcow2 -b BASE -F FORMAT`` (an argument list);
- ``seed.iso``   the cloud-init NoCloud seed the provider built;
- ``disk.json``  the owner and the base the overlay was made from;
- ``kept-<time>.qcow2`` an overlay keep_disk kept when the guest was replaced onto another base.

Directories are the agent's (root's), 0700: nobody else can put a symlink where root writes.
Files are 0600, owned by the user QEMU runs as (QEMU opens them as root before ``-runas``); a
kept overlay is root's again.
The caller holds the guest's lock (rundir.locked).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import rundir
from ..errors import AgentError, held_fix

ROOT = Path(os.environ.get("KVMNET_DISK_ROOT", "/var/lib/kvmnet"))
GIB = 1024**3
OVERLAY = "disk.qcow2"
SEED = "seed.iso"
RECORD = "disk.json"
# An overlay keep_disk kept through a replacement onto another base: kept-<UTC time>.qcow2.
KEPT_ASIDE = "kept-"
QEMU_IMG_TIMEOUT = 120.0


def _levels() -> list[Path]:
    """The directories down to the guests' (see the module's doc), outermost first."""
    own = os.stat("/proc/self/ns/net").st_ino
    try:
        host = os.stat("/proc/1/ns/net").st_ino
    except OSError:
        host = None
    levels = [ROOT] if own == host else [ROOT, ROOT / f"netns-{own}"]
    return [*levels, levels[-1] / "guests"]


def disks_root() -> Path:
    """Where guests' disk directories live on this host, each level made (or found) 0700."""
    for level in _levels():
        rundir.private_dir(level)
    return _levels()[-1]


def guest_dir(name: str) -> Path:
    """A guest's disk directory's path (nothing is made: a guest without disks leaves no
    trace under /var/lib)."""
    return _levels()[-1] / name


def wanted_paths(name: str, spec: dict[str, Any]) -> dict[str, str | None]:
    """The overlay's and the seed's paths for this spec (None where it has none)."""
    if not spec.get("base_image") and spec.get("seed_iso") is None:
        return {"disk_path": None, "seed_path": None}
    d = guest_dir(name)
    return {
        "disk_path": str(d / OVERLAY) if spec.get("base_image") else None,
        "seed_path": str(d / SEED) if spec.get("seed_iso") is not None else None,
    }


def disk_key(spec: dict[str, Any]) -> str:
    """What a running guest's disks were made from: a guest asked for again with another
    base or seed is restarted, not taken over."""
    seed = spec.get("seed_iso")
    doc = {
        "base_image": spec.get("base_image"),
        "base_format": spec.get("base_format"),
        "disk_size_gib": spec.get("disk_size_gib"),
        "seed": hashlib.sha256(seed).hexdigest() if seed is not None else None,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def qemu_img(args: list[str]) -> str:
    """Run qemu-img with an argument list; its stdout. One-line errors."""
    exe = shutil.which("qemu-img")
    if exe is None:
        raise AgentError("missing", "qemu-img not found on this host (apt-get install qemu-utils)")
    try:
        proc = subprocess.run(
            [exe, *args],
            capture_output=True,
            text=True,
            timeout=QEMU_IMG_TIMEOUT,
            stdin=subprocess.DEVNULL,
            umask=0o077,
        )
    except subprocess.TimeoutExpired:
        raise AgentError(
            "failed", f"qemu-img {args[0]} did not finish within {QEMU_IMG_TIMEOUT:g} s"
        ) from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise AgentError("failed", f"qemu-img {args[0]} failed: {lines[-1]}")
    return proc.stdout


def image_info(path: str) -> dict[str, Any]:
    """qemu-img's view of an image: format (probed, for comparison only) and virtual-size."""
    doc = json.loads(qemu_img(["info", "--output", "json", "-U", path]))
    if not isinstance(doc, dict) or not isinstance(doc.get("virtual-size"), int):
        raise AgentError("failed", f"qemu-img info of {path} reported no virtual size")
    return doc


def base_chain(base: str) -> list[dict[str, Any]]:
    """The base and every image behind it, as `qemu-img info --backing-chain` reads them.
    When the chain cannot be read (a backing file that is missing or not an image), the base
    alone: its own backing-filename is then what check_base refuses."""
    try:
        doc = json.loads(qemu_img(["info", "--backing-chain", "--output=json", "-U", base]))
    except AgentError:
        doc = [image_info(base)]
    chain = doc if isinstance(doc, list) else [doc]
    if not chain or not all(isinstance(d, dict) for d in chain):
        raise AgentError("failed", f"qemu-img info of {base} reported no image")
    if not isinstance(chain[0].get("virtual-size"), int):
        raise AgentError("failed", f"qemu-img info of {base} reported no virtual size")
    return chain


def _data_file(doc: dict[str, Any]) -> str | None:
    """A qcow2's external data file: its guest data lives in another host file."""
    data = (doc.get("format-specific") or {}).get("data") or {}
    value = data.get("data-file") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def check_trusted(name: str, base: str) -> None:
    """Whoever can write the base (or swap it in its directory) writes every guest made from
    it: the base and its directory are writable by their owner only, and, when the agent runs
    as root, that owner is root. Checked at every start."""
    real = os.path.realpath(base)
    places = [("base_image", real), ("the directory of base_image", os.path.dirname(real))]
    if real != base:  # a symlink: whoever can write its directory can point it elsewhere
        places.append(("the directory of the link base_image", os.path.dirname(base)))
    for what, path in places:
        info = os.stat(path)
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o022:
            raise AgentError(
                "invalid",
                f"guest {name}: {what} {path} is writable by group or others (mode {mode:04o}), "
                f"so they could change what the guest boots; fix: chmod go-w {path}, or move "
                "the image to a directory only root can write",
            )
        if os.geteuid() == 0 and info.st_uid != 0:
            raise AgentError(
                "invalid",
                f"guest {name}: {what} {path} is owned by uid {info.st_uid}, not root, so that "
                f"user could change what the guest boots; fix: chown root: {path}",
            )


def check_base(base: str, fmt: str, name: str = "") -> int:
    """The base image exists, is a trusted file in the declared format with no backing file
    or external data file of its own; its virtual size."""
    who = f"guest {name}: " if name else ""
    try:
        info = os.stat(base)
    except FileNotFoundError:
        raise AgentError(
            "missing",
            f"{who}base_image {base} does not exist on this host; copy the image there or fix "
            "the path",
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise AgentError("invalid", f"{who}base_image {base} is not a regular file")
    check_trusted(name, base)
    chain = base_chain(base)
    doc = chain[0]
    if doc.get("format") != fmt:
        raise AgentError(
            "invalid",
            f"{who}base_image {base} is a {doc.get('format')} image, not {fmt}; set base_format",
        )
    backing = doc.get("full-backing-filename") or doc.get("backing-filename")
    if len(chain) > 1 or backing:
        raise AgentError(
            "invalid",
            f"{who}base_image {base} has a backing file of its own ({backing}), which QEMU "
            "would open and the guest read; fix: flatten it (qemu-img convert -O "
            f"{fmt} {base} NEW) and set base_image to NEW",
        )
    data_file = _data_file(doc)
    if data_file:
        raise AgentError(
            "invalid",
            f"{who}base_image {base} keeps its data in another file ({data_file}), which QEMU "
            f"would open and the guest read; fix: flatten it (qemu-img convert -O {fmt} "
            f"{base} NEW) and set base_image to NEW",
        )
    return int(doc["virtual-size"])


def load_record(d: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(rundir.read_text(d / RECORD) or "null")
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def save_record(d: Path, record: dict[str, Any]) -> None:
    rundir.replace_text(d / RECORD, json.dumps(record, sort_keys=True, indent=1))


def _owned_dir(name: str, owner: str) -> tuple[Path, dict[str, Any] | None]:
    """The guest's disk directory (made if absent) and its record; refuses another's."""
    for attempt in range(3):  # another agent may tidy an empty parent away meanwhile
        d = disks_root() / name
        existed = d.exists()
        try:
            rundir.private_dir(d)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    record = load_record(d)
    if record is not None and record.get("owner") != owner:
        raise AgentError(
            "conflict",
            f"guest disk directory {d} belongs to kvmnet resource {record.get('owner')}; "
            f"kvmnet will not touch it: {held_fix(str(record.get('owner')), owner)}",
        )
    if record is None and existed and any(d.iterdir()):
        raise AgentError(
            "conflict",
            f"guest disk directory {d} exists and is not kvmnet's; kvmnet will not "
            "touch it (move it away, then run up again)",
        )
    return d, record


def _finish_file(path: Path, run_as: str | None) -> None:
    """0600, owned by run_as when set; never through a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AgentError("conflict", f"{path} is not a regular file")
        os.fchmod(fd, 0o600)
        if run_as:
            user = pwd.getpwnam(run_as)
            os.fchown(fd, user.pw_uid, user.pw_gid)
        else:
            os.fchown(fd, os.geteuid(), os.getegid())
    finally:
        os.close(fd)


def _write_seed(d: Path, data: bytes, run_as: str | None) -> Path:
    tmp, path = d / (SEED + ".new"), d / SEED
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    _finish_file(tmp, run_as)
    os.replace(tmp, path)
    return path


def _make_overlay(d: Path, spec: dict[str, Any], size: int) -> Path:
    tmp, path = d / (OVERLAY + ".new"), d / OVERLAY
    tmp.unlink(missing_ok=True)
    base, fmt = spec["base_image"], spec["base_format"]
    qemu_img(["create", "-q", "-f", "qcow2", "-b", base, "-F", fmt, str(tmp), str(size)])
    _finish_file(tmp, spec.get("run_as"))
    os.replace(tmp, path)
    return path


def prepare(spec: dict[str, Any]) -> bool:
    """Make (or take over) the guest's overlay and write its seed, as the spec asks.

    A create reuses the overlay this same resource left (kept by keep_disk, or left by a guest
    that stopped behind kvmnet's back) when it was made from the same base; a replacement's
    delete removed it otherwise. Returns whether a new overlay was made (the caller's undo
    removes it again if the guest does not start)."""
    name, owner = spec["name"], spec["owner"]
    seed = spec.get("seed_iso")
    if not spec.get("base_image") and seed is None:
        return False
    base, fmt, want_gib = spec.get("base_image"), spec["base_format"], spec.get("disk_size_gib")
    base_size = check_base(base, fmt, name) if base else 0
    if want_gib is not None and want_gib * GIB < base_size:
        raise AgentError(
            "invalid",
            f"disk_size_gib {want_gib} is smaller than base_image {base}'s virtual size "
            f"({base_size} bytes = {base_size / GIB:.2f} GiB); an overlay cannot shrink its base",
        )
    d, record = _owned_dir(name, owner)
    overlay = d / OVERLAY
    made = False
    if base:
        if record is not None and overlay.exists() and record.get("kept"):
            if (record.get("base_image"), record.get("base_format")) != (base, fmt):
                # keep_disk kept it through a replacement onto another base: it stays, aside
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                os.replace(overlay, d / f"{KEPT_ASIDE}{stamp}.qcow2")
        if record is not None and overlay.exists():
            if (record.get("base_image"), record.get("base_format")) != (base, fmt):
                raise AgentError(
                    "conflict",
                    f"the overlay {overlay} kept from an earlier guest {name} was made from "
                    f"{record.get('base_image')} ({record.get('base_format')}), not {base}; "
                    "delete it (or set base_image back), then run up again",
                )
            _reuse_overlay(overlay, spec, want_gib)
        else:
            record = {"owner": owner, "name": name, "base_image": base, "base_format": fmt}
            save_record(d, record)
            _make_overlay(d, spec, max(base_size, (want_gib or 0) * GIB))
            made = True
    if record is None:
        record = {"owner": owner, "name": name, "base_image": None, "base_format": None}
    record["kept"] = False
    save_record(d, record)
    if seed is not None:
        try:
            _write_seed(d, seed, spec.get("run_as"))
        except BaseException:
            release(name, owner, keep_disk=not made)
            raise
    else:
        (d / SEED).unlink(missing_ok=True)
    return made


def _reuse_overlay(overlay: Path, spec: dict[str, Any], want_gib: int | None) -> None:
    if want_gib is not None:
        current = int(image_info(str(overlay))["virtual-size"])
        if want_gib * GIB < current:
            raise AgentError(
                "invalid",
                f"disk_size_gib {want_gib} is smaller than the overlay {overlay} kvmnet keeps "
                f"({current / GIB:.2f} GiB); overlays only grow",
            )
        if want_gib * GIB > current:
            qemu_img(["resize", "-q", "-f", "qcow2", str(overlay), str(want_gib * GIB)])
    _finish_file(overlay, spec.get("run_as"))


def release(name: str, owner: str, keep_disk: bool) -> str | None:
    """Remove the guest's seed, and its overlay unless keep_disk; the kept overlay's path.
    Another resource's directory (or one kvmnet did not make) is left alone."""
    d = guest_dir(name)
    if not d.exists():
        return None
    record = load_record(d)
    if record is None or record.get("owner") != owner:
        return None
    for leftover in (SEED, SEED + ".new", OVERLAY + ".new"):
        (d / leftover).unlink(missing_ok=True)
    overlay = d / OVERLAY
    if keep_disk and overlay.exists():
        _finish_file(overlay, None)  # root's again: the guest's own user goes with the guest
        record["kept"] = True
        save_record(d, record)
        return str(overlay)
    if any(p.name.startswith(KEPT_ASIDE) for p in d.iterdir()):
        overlay.unlink(missing_ok=True)  # disks kept aside are the operator's to remove
        record["kept"] = True
        save_record(d, record)
        return None
    shutil.rmtree(d)
    _tidy()
    return None


def _tidy() -> None:
    """A namespace's own levels (lab hosts) go with its last guest: nothing of a lab host
    outlives it under /var/lib. The host's own /var/lib/kvmnet/guests stays."""
    levels = _levels()
    if len(levels) < 3:  # the host's own namespace
        return
    for level in reversed(levels[1:]):
        try:
            level.rmdir()  # only when empty
        except OSError:
            return
