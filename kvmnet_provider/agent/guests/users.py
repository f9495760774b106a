"""The host user a guest's QEMU runs as: by default one kvmnet makes for that guest alone.

``run_as`` unset: a system user of this guest's own, ``kvmnet-<8 hex>`` from its owner mark
and network namespace (lab hosts sharing one /etc/passwd keep theirs apart), with a group of
its own, no home and no login shell, made at start and removed when the guest is deleted (or
fails to start). Every guest thus has its own uid: no guest's QEMU can signal or ptrace
another's. ``run_as`` names an existing user instead (kvmnet neither makes nor removes it);
``run_as: root`` keeps QEMU root, only when asked for.

The user is made with ``useradd`` (an argument list), not by editing /etc/passwd: the host's
own tool keeps its locks, shadow file and uid ranges right; Debian always has it (passwd).
The comment field marks a user as this guest's; kvmnet never touches a user without it.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import AgentError

PREFIX = "kvmnet-"
SEARCH_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
NO_HOME = "/nonexistent"
TIMEOUT = 30.0


def namespace_label() -> str:
    """`host` in the host's own network namespace, `netns-<inode>` in any other (a lab host)."""
    own = os.stat("/proc/self/ns/net").st_ino
    try:
        host = os.stat("/proc/1/ns/net").st_ino
    except OSError:
        host = None
    return "host" if own == host else f"netns-{own}"


def _digest(owner: str, label: str) -> str:
    return hashlib.sha256(f"{label}\0{owner}".encode()).hexdigest()


def user_name(owner: str, label: str) -> str:
    """The guest's own user: short (ps and ls show it whole), the same at every start."""
    return PREFIX + _digest(owner, label)[:8]


def comment(guest: str, owner: str, label: str) -> str:
    """The user's comment field: the guest's name for the operator, and what proves the user
    is this guest's (the namespace, more of the digest than the name holds)."""
    return f"kvmnet guest {guest} {label} {_digest(owner, label)[:24]}"


def _is_ours(entry: pwd.struct_passwd, owner: str, label: str) -> bool:
    words = entry.pw_gecos.split()
    return words[:2] == ["kvmnet", "guest"] and words[-2:] == comment("", owner, label).split()[-2:]


def runs_as(spec: dict[str, Any]) -> str | None:
    """The user QEMU switches to (None: it stays root, as asked, or as the agent's own user
    when the agent is not root and could not switch anyway)."""
    asked = spec.get("run_as")
    if asked == "root" or (asked is None and os.geteuid() != 0):
        return None
    return str(asked) if asked else user_name(spec["owner"], namespace_label())


def ensure(spec: dict[str, Any]) -> None:
    """Make the guest's own user if it is the one QEMU runs as and does not exist yet."""
    name, owner, label = spec.get("run_as"), spec["owner"], namespace_label()
    if name is None or name != user_name(owner, label):
        return  # root, or a user of the operator's (checked by qemu_user)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is not None:
        if not _is_ours(entry, owner, label):
            raise AgentError(
                "conflict",
                f"host user {name} exists and is not kvmnet's user for guest {spec['name']} "
                f"(comment {entry.pw_gecos!r}); kvmnet will not run the guest as it: remove "
                "that user or set run_as",
            )
        return
    nologin = shutil.which("nologin", path=SEARCH_PATH) or "/bin/false"
    _run(
        "useradd",
        ["--system", "--user-group", "--no-create-home", "--home-dir", NO_HOME,
         "--shell", nologin, "--comment", comment(spec["name"], owner, label), name],
    )  # fmt: skip


def remove(owner: str, wait: float = 10.0, strict: bool = True) -> str | None:
    """Remove the guest's own user (and its group); the name removed. Users kvmnet did not
    make for this guest are never touched. A QEMU just stopped may not be reaped yet (userdel
    refuses a user any process has): up to `wait` seconds for that; a user still in use after
    it is an error when `strict`, else kept."""
    label = namespace_label()
    name = user_name(owner, label)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if not _is_ours(entry, owner, label):
        return None
    deadline = time.monotonic() + wait
    while pids := _busy(entry.pw_uid):
        if time.monotonic() >= deadline:
            if not strict:
                return None
            raise AgentError(
                "failed",
                f"host user {name} of guest {entry.pw_gecos.split()[2]} is still used by "
                f"process {', '.join(map(str, pids[:5]))}; run the delete again once it exits",
            )
        time.sleep(0.05)
    _run("userdel", [name])
    try:  # userdel removes a user's own group; one left by an older userdel goes too
        group = grp.getgrnam(name)
    except KeyError:
        return name
    if group.gr_gid == entry.pw_gid and not group.gr_mem:
        _run("groupdel", [name])
    return name


def remove_namespace_users(label: str) -> list[str]:
    """Remove every idle guest user kvmnet made in the namespace `label` (`netns-<inode>`):
    the lab's teardown of a namespace whose guests died with it. The names removed."""
    removed = []
    for entry in pwd.getpwall():
        words = entry.pw_gecos.split()
        if words[:2] != ["kvmnet", "guest"] or len(words) != 5 or words[3] != label:
            continue
        if entry.pw_name.startswith(PREFIX) and not _busy(entry.pw_uid):
            _run("userdel", [entry.pw_name])
            removed.append(entry.pw_name)
    return removed


def discard(spec: dict[str, Any]) -> None:
    """After a failed start: the guest's own user goes unless its QEMU still runs."""
    try:
        remove(spec["owner"], wait=2.0, strict=False)
    except AgentError:
        pass  # the start's own error is the one to report


def _busy(uid: int) -> list[int]:
    """The processes that run as `uid` (real, effective, saved or filesystem), a zombie too."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue  # exited meanwhile
        for line in text.splitlines():
            if line.startswith("Uid:"):
                if str(uid) in line.split()[1:]:
                    found.append(int(status.parent.name))
                break
    return sorted(found)


def _run(tool: str, args: list[str]) -> None:
    exe = shutil.which(tool, path=SEARCH_PATH)
    if exe is None:
        raise AgentError(
            "missing",
            f"{tool} is not on this host (Debian: apt-get install passwd); kvmnet needs it to "
            "manage the users guests' QEMU runs as, or set each guest's run_as",
        )
    try:
        proc = subprocess.run(
            [exe, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
            env={"PATH": SEARCH_PATH, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        raise AgentError(
            "failed", f"{tool} {args[-1]} did not finish within {TIMEOUT:g} s"
        ) from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise AgentError("failed", f"{tool} {args[-1]} failed: {lines[-1]}")
