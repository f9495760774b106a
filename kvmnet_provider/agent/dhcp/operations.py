"""The agent's dhcp.* operations: start (idempotent; also updates in place), read, stop.

A network's dnsmasq has a run directory, ``<hoststate>/netns-<inode>/dhcp/<bridge>/``
(keyed by the network namespace, like the guests', so lab hosts sharing a filesystem keep
separate servers), holding its files (config.py), ``server.json`` (the owner and the digests
of what it was started with) and the lease file. dnsmasq daemonizes and outlives the agent;
a PID is only signalled after /proc/PID/cmdline shows dnsmasq with our --conf-file.
Updates keep the lease file: hosts files changed only -> SIGHUP, anything else -> restart.
dnsmasq runs as an unprivileged user; the hosts files it reads as that user are kept apart
(account.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...spec import validate
from ...spec.dhcp import normalise_spec
from ...spec.wire import Handlers
from .. import hoststate, rundir
from ..errors import AgentError
from . import account, config

META = "server.json"
SEARCH_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
INSTALL = "apt-get install dnsmasq-base"


def _root() -> Path:
    return rundir.private_dir(hoststate.namespace_dir() / "dhcp")


@contextmanager
def _locked(bridge: str) -> Iterator[Path]:
    """This network's run dir path, under a host-wide lock per bridge (every agent)."""
    root = _root()
    run_dir = root / bridge
    with rundir.name_lock(root.parent / "dhcp-locks", bridge, kept_while=run_dir):
        yield run_dir  # no server, no lock file


def _binary() -> str:
    found = shutil.which("dnsmasq", path=SEARCH_PATH)
    if found is None:
        raise AgentError("missing", f"dnsmasq is not on this host; install with: {INSTALL}")
    return found


def _load(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(rundir.read_text(run_dir / META) or "null")
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _save(run_dir: Path, meta: dict[str, Any]) -> None:
    rundir.replace_text(run_dir / META, json.dumps(meta, sort_keys=True, indent=1))


def _is_ours(pid: int, run_dir: Path) -> bool:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    argv = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    if not argv or stat.rsplit(")", 1)[-1].split()[0:1] == ["Z"]:
        return False
    return os.path.basename(argv[0]) == "dnsmasq" and config.argv(argv[0], run_dir)[1] in argv


def live_pid(run_dir: Path) -> int | None:
    try:
        text = (rundir.read_text(run_dir / config.PIDFILE) or "").strip()
    except OSError:
        return None
    pid = int(text) if text.isdigit() else 0
    return pid if pid > 1 and _is_ours(pid, run_dir) else None


def _signal(pid: int, run_dir: Path, sig: int) -> None:
    if _is_ours(pid, run_dir):  # checked right before every signal
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop(run_dir: Path) -> str:
    pid = live_pid(run_dir)
    if pid is None:
        return "not running"
    for sig, how in ((signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, "SIGKILL")):
        _signal(pid, run_dir, sig)
        deadline = time.monotonic() + 5.0
        while _is_ours(pid, run_dir):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        else:
            return how
    raise AgentError("failed", f"dnsmasq {pid} in {run_dir} survived SIGKILL")


def _launch(run_dir: Path) -> int:
    # A dnsmasq just stopped can hold its port 53 for a moment longer (a child serving a TCP
    # query exits on its own time): a bind refused that way is tried again, for up to 5 s.
    deadline = time.monotonic() + 5.0
    while True:
        try:
            return _launch_once(run_dir)
        except AgentError as exc:
            if "Address already in use" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise AgentError("failed", f"{exc.message}; {IN_USE_FIX}") from None
        time.sleep(0.25)


# Still refused after the retries: not a dnsmasq of ours that is just stopping.
IN_USE_FIX = (
    "something else on this host serves DNS or DHCP on the bridge's address, or another "
    "network (of another stack, too) has the same gateway address: give this network its "
    "own subnet and gateway, or stop that server"
)


def _launch_once(run_dir: Path) -> int:
    log = run_dir / "start.log"
    with open(log, "wb", opener=rundir.nofollow) as out:
        try:
            proc = subprocess.run(
                config.argv(_binary(), run_dir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                close_fds=True,
                start_new_session=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            raise AgentError(
                "failed", f"dnsmasq did not finish starting within 30 s ({run_dir})"
            ) from None
    said = (rundir.read_text(log) or "").strip()[-800:]
    if proc.returncode != 0:
        raise AgentError("failed", f"dnsmasq exited with {proc.returncode}: {said}")
    deadline = time.monotonic() + 5.0
    while (pid := live_pid(run_dir)) is None:  # the pidfile is written as it daemonizes
        if time.monotonic() >= deadline:
            raise AgentError("failed", f"dnsmasq started but is not running: {said}")
        time.sleep(0.02)
    return pid


def _state(run_dir: Path, meta: dict[str, Any], pid: int | None, how: str) -> dict[str, Any]:
    return {
        "pid": pid,
        "running": pid is not None,
        "run_dir": str(run_dir),
        "leases": config.leases(rundir.read_text(run_dir / config.LEASES)),
        "conf_sha256": meta.get("conf_sha256"),
        "how": how,
    }


def start(args: dict[str, Any]) -> dict[str, Any]:
    """Run dnsmasq as specified: start it, SIGHUP it (hosts files changed) or restart it (the
    config changed); nothing when it already runs as asked. The lease file always stays."""
    spec = normalise_spec(args)
    binary = _binary()
    with _locked(spec["bridge"]) as run_dir:
        meta = _load(run_dir)
        if run_dir.exists() and (meta is None or meta.get("owner") != spec["owner"]):
            if meta is not None or live_pid(run_dir) is not None:
                raise _not_ours(run_dir, meta)
        rundir.private_dir(run_dir)
        user, group, gid = account.account()
        files_dir = account.prepare(spec["bridge"], gid)
        texts = {
            config.CONF: config.conf_text(spec, run_dir, files_dir, user, group),
            config.DHCP_HOSTS: config.dhcp_hosts_text(spec),
            config.HOSTS: config.hosts_text(spec),
        }
        conf_sha = config.digest(texts[config.CONF])
        hosts_sha = config.digest(texts[config.DHCP_HOSTS] + texts[config.HOSTS])
        pid = live_pid(run_dir)
        old = meta or {}
        rundir.replace_text(run_dir / config.CONF, texts[config.CONF])
        for name in (config.DHCP_HOSTS, config.HOSTS):
            account.write(files_dir / name, texts[name], gid)
            (run_dir / name).unlink(missing_ok=True)  # where a root dnsmasq read them
        meta = {"owner": spec["owner"], "bridge": spec["bridge"], "binary": binary,
                "conf_sha256": conf_sha, "hosts_sha256": hosts_sha}  # fmt: skip
        _save(run_dir, meta)
        if pid is not None and old.get("conf_sha256") == conf_sha:
            if old.get("hosts_sha256") == hosts_sha:
                return _state(run_dir, meta, pid, "unchanged")
            _signal(pid, run_dir, signal.SIGHUP)  # re-reads dhcp-hosts and hosts
            return _state(run_dir, meta, pid, "reloaded")
        how = "started" if pid is None else "restarted"
        _stop(run_dir)
        try:
            pid = _launch(run_dir)
        except BaseException:
            _stop(run_dir)
            raise
        return _state(run_dir, meta, pid, how)


def read(args: dict[str, Any]) -> dict[str, Any] | None:
    """The server's state (running or not: a dead dnsmasq is drift, not absence), or None
    when its run dir is gone or not ours."""
    bridge, owner = validate.ifname(args["bridge"]), validate.owner(args["owner"])
    with _locked(bridge) as run_dir:
        meta = _load(run_dir)
        if meta is not None and meta.get("owner") == owner:
            return _state(run_dir, meta, live_pid(run_dir), "read")
    _tidy()
    return None


def stop(args: dict[str, Any]) -> dict[str, Any]:
    """Stop our dnsmasq and remove its run dir (the leases go with the network)."""
    bridge, owner = validate.ifname(args["bridge"]), validate.owner(args["owner"])
    with _locked(bridge) as run_dir:
        meta = _load(run_dir)
        if meta is None:
            if run_dir.exists() and live_pid(run_dir) is not None:
                raise _not_ours(run_dir, meta)
            shutil.rmtree(run_dir, ignore_errors=True)
            account.remove(bridge)
            return {"deleted": False, "how": "absent"}
        if meta.get("owner") != owner:
            raise _not_ours(run_dir, meta)
        how = _stop(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        account.remove(bridge)
    _tidy()
    return {"deleted": True, "how": how}


def _tidy() -> None:
    """The dhcp dirs go when no server is left (the host as before)."""
    root = _root()
    for directory in (root.parent / "dhcp-locks", root):
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty: another network's server (or one starting) keeps it
    account.tidy()


def _not_ours(run_dir: Path, meta: dict[str, Any] | None) -> AgentError:
    holder = f"kvmnet resource {meta['owner']}" if meta and meta.get("owner") else "unknown"
    return AgentError(
        "conflict",
        f"a DHCP server for bridge {run_dir.name} exists on this host and belongs to {holder} "
        f"({run_dir}); kvmnet will not touch it",
    )


def handlers() -> Handlers:
    return {"dhcp.start": start, "dhcp.read": read, "dhcp.stop": stop}
