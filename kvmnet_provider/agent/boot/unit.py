"""The boot side of the records: a copy of the agent's code under /var/lib/kvmnet, and the
systemd unit that runs its restore at boot.

The code the agent runs from lives in /run (connection/hostboot.py), which a reboot empties:
the restore runs from a copy kept next to the records, refreshed when the agent's code
changes. The unit is installed with the first record and removed with the last.

Only a real host gets the unit: one whose agent runs in the network namespace of PID 1 (the
init that would start the unit) on a host booted by systemd (/run/systemd/system). A lab host
is a network namespace on a shared kernel: its records and code copy are kept the same way,
and the lab runs the restore itself where systemd would (see lab/kvmnet_lab/lab/faults.py).
A real host without systemd keeps working as it did; `up` warns once that nothing comes
back by itself (the provider sees "autostart": "no-systemd" in the answer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..rundir import private_dir, read_text, replace_text
from . import records

UNIT_NAME = "kvmnet-restore.service"
UNIT_DIR = Path(os.environ.get("KVMNET_UNIT_DIR", "/etc/systemd/system"))
SYSTEMD_RUNNING = Path("/run/systemd/system")
LAUNCHER = "kvmnet-restore.py"
PACKAGES = ("agent", "spec")  # the shipped tree: <top>/{agent,spec}/...

# Runs the copy's restore: -I keeps the environment and the working directory out of it, so
# the launcher puts its own directory on the path.
LAUNCHER_TEXT = """\
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from {top}.agent.boot import restore
restore.main()
"""

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


def keep_code() -> Path:
    """Copy the running agent's code under the records' directory when the copy differs;
    returns the launcher the restore runs from."""
    top = top_package()
    source = code_root() / top
    target = private_dir(records.namespace_dir() / "agent-code")
    stamp = target / "source"
    marker = f"{source}\n{_tree_stamp(source)}"
    if read_text(stamp) != marker or not (target / top).is_dir():
        tmp = target / f".{top}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.mkdir(tmp, 0o700)
        (tmp / "__init__.py").write_text("")
        for package in PACKAGES:
            shutil.copytree(
                source / package,
                tmp / package,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        shutil.rmtree(target / top, ignore_errors=True)
        os.rename(tmp, target / top)
        replace_text(stamp, marker)
    launcher = target / LAUNCHER
    text = LAUNCHER_TEXT.format(top=top)
    if read_text(launcher) != text:
        replace_text(launcher, text)
    return launcher


def _tree_stamp(source: Path) -> str:
    """Sizes and times of the agent's files: changes when its code does."""
    parts = []
    for package in PACKAGES:
        for path in sorted((source / package).rglob("*.py")):
            info = path.stat()
            parts.append(f"{path.relative_to(source)}:{info.st_size}:{info.st_mtime_ns}")
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
