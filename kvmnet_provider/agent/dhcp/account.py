"""The user dnsmasq runs as, and the directory of the files it reads as that user.

dnsmasq parses packets from guests, so it does not keep root: it starts as root (binds ports
53 and 67, opens the lease file, pidfile and log) and switches to ``user=`` itself, keeping
only the capabilities DHCP needs (NET_ADMIN, NET_BIND_SERVICE, NET_RAW). The lease file stays
root's, in the private run dir: dnsmasq writes it through the descriptor it opened as root.
The hosts files it reads after the switch (at start and on every SIGHUP) live in a tree of
their own, ``<run root>-dnsmasq/netns-<inode>/<bridge>/``: root's directories and files, the
last level and the files readable by the user's group only, nothing in it writable by
dnsmasq. The run dir under /run/kvmnet stays root's, 0700.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from pathlib import Path

from .. import hoststate
from ..errors import AgentError
from ..rundir import own_directory

# Debian's dnsmasq-base (the package the agent asks for) creates the system user `dnsmasq`
# for exactly this (group nogroup, no shell), as Fedora's and Arch's packages do. `nobody`,
# dnsmasq's own compiled-in default, is the deliberate fallback for a dnsmasq installed
# without its user: unprivileged all the same, though shared with other daemons.
USERS = ("dnsmasq", "nobody")
CREATE_USER = "useradd --system --no-create-home --shell /usr/sbin/nologin dnsmasq"


def account() -> tuple[str, str, int]:
    """(user, group, gid) dnsmasq switches to: the first of USERS this host has."""
    for name in USERS:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        try:
            group = grp.getgrgid(user.pw_gid).gr_name
        except KeyError:
            continue  # a user whose primary group is gone: dnsmasq could not switch to it
        return name, group, user.pw_gid
    raise AgentError(
        "missing",
        f"this host has neither a dnsmasq nor a nobody user for dnsmasq to run as: {CREATE_USER}",
    )


def root() -> Path:
    return Path(f"{hoststate.ROOT}-dnsmasq")


def files_dir(bridge: str) -> Path:
    """Where this network's hosts files are (its path only)."""
    return root() / f"netns-{os.stat('/proc/self/ns/net').st_ino}" / bridge


def prepare(bridge: str, gid: int) -> Path:
    """The network's files directory, made (or found, then set) root's: the levels above
    it 0711 (passed through, not listed), itself 0710 with group `gid`."""
    path = files_dir(bridge)
    for attempt in range(3):  # another agent may tidy an emptied level away meanwhile
        try:
            _own_dir(path.parent.parent, 0o711, os.getegid())
            _own_dir(path.parent, 0o711, os.getegid())
            return _own_dir(path, 0o710, gid)
        except FileNotFoundError:
            if attempt == 2:
                raise
    return path


def _own_dir(path: Path, mode: int, gid: int) -> Path:
    info = own_directory(path)
    os.chown(path, info.st_uid, gid, follow_symlinks=False)
    os.chmod(path, mode, follow_symlinks=False)
    return path


def write(path: Path, text: str, gid: int) -> None:
    """`text` as `path`, whole: root's, mode 0640 with group `gid` (readable by dnsmasq)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchown(f.fileno(), os.geteuid(), gid)
        os.fchmod(f.fileno(), 0o640)
        f.write(text)
    os.replace(tmp, path)


def remove(bridge: str) -> None:
    """The network's files directory goes, and each level above it once empty."""
    path = files_dir(bridge)
    shutil.rmtree(path, ignore_errors=True)
    tidy()


def tidy() -> None:
    path = files_dir("x").parent
    for level in (path, path.parent):
        try:
            level.rmdir()
        except OSError:
            return  # not empty: another network's (or one starting) keeps it
