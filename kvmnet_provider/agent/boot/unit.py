"""The boot side of the records: a copy of the agent's code under /var/lib/kvmnet, and the
systemd unit that runs its restore at boot.

The code the agent runs from lives in /run (connection/hostboot.py), which a reboot empties:
the restore runs from a copy kept next to the records, refreshed when the agent's code
changes. The unit is installed with the first record and removed with the last. The copy is
one zip archive the restore imports from (zipimport): a network's first record writes one
file, and its last removes one, not a tree of a hundred.

Only a real host gets the unit: one whose agent runs in the network namespace of PID 1 (the
init that would start the unit) on a host booted by systemd (/run/systemd/system). A lab host
is a network namespace on a shared kernel: its records and code copy are kept the same way,
and the lab runs the restore itself where systemd would (see lab/kvmnet_lab/lab/faults.py).
A real host without systemd keeps working as it did; `up` warns once that nothing comes
back by itself (the provider sees "autostart": "no-systemd" in the answer).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ..rundir import private_dir, read_text, replace_text
from . import records

UNIT_NAME = "kvmnet-restore.service"
UNIT_DIR = Path(os.environ.get("KVMNET_UNIT_DIR", "/etc/systemd/system"))
SYSTEMD_RUNNING = Path("/run/systemd/system")
LAUNCHER = "kvmnet-restore.py"
PACKAGES = ("agent", "spec")  # the shipped tree: <top>/{agent,spec}/...
SHIPPED_TOP = "kvmnet_agent"  # the top package of an agent shipped by connection/hostboot.py

# Runs the copy's restore: -I keeps the environment and the working directory out of it, so
# the launcher puts the archive beside it on the path.
LAUNCHER_TEXT = """\
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "{archive}"))
from {top}.agent.boot import restore
restore.main()
"""
# Entries' time: the archive depends on the code only (zipimport checks no source dates).
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

UNIT_TEXT = """\
[Unit]
Description=kvmnet: bring back the networks and guests kvmnet made
Wants=network-online.target
After=network-online.target
Before=multi-user.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={python} -I {launcher}

[Install]
WantedBy=multi-user.target
"""


def code_root() -> Path:
    """The directory holding the running agent's top package (kvmnet_agent when shipped)."""
    return Path(__file__).resolve().parents[3]


def top_package() -> str:
    return __package__.split(".")[0] if __package__ else "kvmnet_agent"


def launcher_path() -> Path:
    return records.namespace_dir() / "agent-code" / LAUNCHER


def archive_name(top: str) -> str:
    return f"{top}.zip"


def keep_code() -> Path:
    """Write the running agent's code as one archive under the records' directory when the
    copy differs; returns the launcher the restore runs from."""
    top = top_package()
    source = code_root() / top
    target = private_dir(records.namespace_dir() / "agent-code")
    stamp = target / "source"
    archive = target / archive_name(top)
    marker = f"{source}\n{_tree_stamp(source)}"
    if read_text(stamp) != marker or not archive.is_file():
        tmp = target / f".{archive.name}.tmp-{os.getpid()}"
        built = _built_archive(top)
        if built is None:
            _write_archive(source, top, tmp)
        else:
            _copy_file(built, tmp)
        os.replace(tmp, archive)
        replace_text(stamp, marker)
    launcher = target / LAUNCHER
    text = LAUNCHER_TEXT.format(top=top, archive=archive.name)
    if read_text(launcher) != text:
        replace_text(launcher, text)
    return launcher


def _built_archive(top: str) -> Path | None:
    """The archive of a shipped agent's code, built once inside its code directory (see
    connection/hostboot.py: named by the code's hash, never rewritten, removed whole when no
    agent holds it), so that each network's first record copies one file. None for an agent
    run in place from an installed or checked-out package, whose directory is not kvmnet's."""
    if top != SHIPPED_TOP:
        return None
    built = code_root() / archive_name(top)
    if not built.is_file():
        tmp = code_root() / f".{built.name}.tmp-{os.getpid()}"
        _write_archive(code_root() / top, top, tmp)
        os.replace(tmp, built)
    return built


def _copy_file(source: Path, path: Path) -> None:
    with open(source, "rb") as f:
        _write_private(path, f.read())


def _write_private(path: Path, data: bytes | memoryview) -> None:
    """`data` as `path`, mode 0600, never through a link planted there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_archive(source: Path, top: str, path: Path) -> None:
    """`<top>/{agent,spec}/**.py` as one stored (uncompressed) zip, mode 0600. Built in memory
    and written at once: zipfile seeks back over each entry's header as it goes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo(f"{top}/__init__.py", ZIP_DATE), b"")
        for relative in _code_files(source):
            with open(os.path.join(source, relative), "rb") as f:
                archive.writestr(zipfile.ZipInfo(f"{top}/{relative}", ZIP_DATE), f.read())
    _write_private(path, buffer.getbuffer())


def _code_files(source: Path) -> list[str]:
    """The agent's modules, as paths relative to `source` (caches left out)."""
    found = []
    for package in PACKAGES:
        for directory, subdirs, files in os.walk(source / package):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            base = os.path.relpath(directory, source)
            found += [f"{base}/{name}" for name in sorted(files) if name.endswith(".py")]
    return found


@functools.lru_cache(maxsize=4)
def _tree_stamp(source: Path) -> str:
    """Sizes and times of the agent's files: changes when its code does. Read once per agent
    process: its code does not change under it (hostboot's trees are named by their hash and
    never rewritten), and every mutation's booking would otherwise stat every file."""
    parts = []
    for relative in _code_files(source):
        info = os.stat(os.path.join(source, relative))
        parts.append(f"{relative}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


def real_host() -> bool:
    """Is this a host systemd boots, the agent in its init network namespace?"""
    if os.environ.get("KVMNET_UNIT_DIR"):  # tests point the unit elsewhere
        return True
    try:  # the unit runs where PID 1 (the init that starts it) lives
        return os.stat("/proc/1/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def host_kind() -> str:
    """ "unit" (a real host booted by systemd), "lab" (a network namespace), "no-systemd"."""
    if not real_host():
        return "lab"
    if not SYSTEMD_RUNNING.is_dir() and not os.environ.get("KVMNET_UNIT_DIR"):
        return "no-systemd"
    return "unit"


def sync(have_records: bool) -> str:
    """Make the code copy and the unit match the records: "unit" (installed), "lab" (a
    network namespace: no unit), "no-systemd", or "none" (no records left)."""
    if not have_records:
        remove_unit()
        forget_all()
        return "none"
    launcher = keep_code()
    kind = host_kind()
    if kind == "unit":
        install_unit(launcher)
    return kind


def forget_all() -> None:
    """Remove the records and the code copy, and the directories they leave empty (the same
    directories hold guests' disks: those stay, with their directories)."""
    directory = records.namespace_path()
    for part in ("records", "agent-code"):
        shutil.rmtree(directory / part, ignore_errors=True)
    prune()


def prune() -> None:
    for emptied in (records.namespace_path(), records.ROOT):
        try:
            os.rmdir(emptied)  # the last books gone: as before kvmnet came
        except OSError:
            pass  # something else is kept there (a disk, another namespace's books, a lock)


def install_unit(launcher: Path) -> None:
    path = UNIT_DIR / UNIT_NAME
    text = UNIT_TEXT.format(python=sys.executable, launcher=launcher)
    if read_text(path) == text:
        return
    replace_text(path, text)
    os.chmod(path, 0o644)
    _systemctl("daemon-reload")
    _systemctl("enable", UNIT_NAME)


def remove_unit() -> None:
    path = UNIT_DIR / UNIT_NAME
    if not path.exists():
        return
    _systemctl("disable", UNIT_NAME)
    path.unlink()
    _systemctl("daemon-reload")


def _systemctl(*args: str) -> None:
    if os.environ.get("KVMNET_UNIT_DIR") or not SYSTEMD_RUNNING.is_dir():
        return  # no systemd to tell (a test's unit directory)
    subprocess.run(
        ["systemctl", "--quiet", *args],
        check=False,
        timeout=60,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
