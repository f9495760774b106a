"""A host's network state, read with independent tools inside its namespace, for comparison.

`host_snapshot` runs `ip -j`, `iptables-legacy-save`, `ip6tables-legacy-save`, `sysctl` and
`ip netns pids` inside a lab host's namespace (never the code under test) and returns a plain
dict. Two snapshots of an unchanged host are equal: volatile fields (counters, lifetimes,
bridge timers, the SSH sessions and host agents that come and go) are left out.

>>> before = host_snapshot(lab_api, "kt1234-h1")
>>> ...  # pulumi up, then pulumi destroy
>>> assert host_snapshot(lab_api, "kt1234-h1") == before
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ExecIn", "diff_snapshots", "host_snapshot", "run_in"]

IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
LINK_KEYS = ("ifname", "ifindex", "link_type", "address", "mtu", "operstate", "master", "ifalias")
ADDR_KEYS = ("family", "local", "prefixlen", "scope", "broadcast", "label")
ROUTE_VOLATILE = ("expires",)
CARRIER_FLAGS = ("LOWER_UP", "NO-CARRIER", "DORMANT", "M-DOWN")
COUNTERS_RE = re.compile(r"\s*\[\d+:\d+\]")
SSHD_LISTENER_RE = re.compile(r"\s*\[listener\].*$")
AGENT_MARKERS = ("kvmnet_agent", "kvmnet-agent-")
ROLLBACK_MARKER = "rollback_main"
RUN_ROOT = Path(os.environ.get("KVMNET_HOST_STATE", "/run/kvmnet"))
BOOT_PARTS = ("records", "agent-code")  # kvmnet's autostart books beside the guests' disks
DISK_ROOT = Path(os.environ.get("KVMNET_DISK_ROOT", "/var/lib/kvmnet"))  # guests' disks


class _HasExecIn(Protocol):
    def exec_in(
        self, namespace: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]: ...


#: a Lab (anything with exec_in) or a callable (namespace, argv) -> stdout text
ExecIn = _HasExecIn | Callable[[str, Sequence[str]], str]


def run_in(runner: ExecIn, namespace: str, argv: Sequence[str], check: bool = True) -> str:
    """Run argv inside namespace and return its stdout (raising on failure when check)."""
    if callable(runner) and not hasattr(runner, "exec_in"):
        return runner(namespace, list(argv))
    proc = runner.exec_in(  # type: ignore[union-attr]
        namespace, list(argv), capture_output=True, text=True, timeout=30
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} in {namespace} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
    return str(proc.stdout)


def _ip_json(runner: ExecIn, namespace: str, *args: str) -> list[dict[str, Any]]:
    out = run_in(runner, namespace, ["ip", "-j", *args])
    data = json.loads(out) if out.strip() else []
    return data if isinstance(data, list) else []


def _links(runner: ExecIn, namespace: str) -> dict[str, dict[str, Any]]:
    links: dict[str, dict[str, Any]] = {}
    for link in _ip_json(runner, namespace, "-d", "link", "show"):
        entry: dict[str, Any] = {k: link.get(k) for k in LINK_KEYS}
        flags: list[str] = sorted(link.get("flags") or [])
        entry["flags"] = flags
        info = link.get("linkinfo") or {}
        entry["kind"] = info.get("info_kind")
        entry["slave_kind"] = info.get("info_slave_kind")
        data = info.get("info_data") or {}
        if entry["kind"] == "bridge":
            # A bridge's carrier follows its ports', set by the kernel's link watch up to a
            # second later: not a property of the host's configuration, and racy to compare.
            entry["operstate"] = None
            entry["flags"] = [f for f in flags if f not in CARRIER_FLAGS]
            entry["stp_state"] = data.get("stp_state")
            entry["forward_delay"] = data.get("forward_delay")
        if entry["kind"] == "tun":
            entry["tun"] = {
                k: data.get(k) for k in ("type", "pi", "vnet_hdr", "multi_queue", "persist", "user")
            }
        links[str(link.get("ifname"))] = entry
    return links


def _addresses(runner: ExecIn, namespace: str) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for link in _ip_json(runner, namespace, "addr", "show"):
        infos = [
            {k: info.get(k) for k in ADDR_KEYS if k in info} for info in link.get("addr_info") or []
        ]
        result[str(link.get("ifname"))] = sorted(infos, key=lambda i: json.dumps(i, sort_keys=True))
    return result


def _routes(runner: ExecIn, namespace: str, family: str) -> list[dict[str, Any]]:
    routes = []
    for route in _ip_json(runner, namespace, family, "route", "show", "table", "all"):
        if route.get("type") == "local" and str(route.get("dst", "")).startswith("fe80:"):
            # appears only once duplicate address detection is done; the address is kept
            continue
        routes.append({k: v for k, v in route.items() if k not in ROUTE_VOLATILE})
    return sorted(routes, key=lambda r: json.dumps(r, sort_keys=True))


def _rules(runner: ExecIn, namespace: str, tool: str) -> dict[str, list[str]]:
    """Each table's rules as iptables-save prints them, minus comments and counters.

    Every table is asked for by name: that also instantiates an unused table (empty, all
    ACCEPT), so a host whose nat table came to life during a test still compares equal.
    """
    tables: dict[str, list[str]] = {}
    for table in IPTABLES_TABLES:
        out = run_in(runner, namespace, [tool, "-t", table])
        lines = []
        for line in out.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            lines.append(COUNTERS_RE.sub("", line))
        tables[table] = lines
    return tables


def _sysctls(runner: ExecIn, namespace: str) -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        values[key] = run_in(runner, namespace, ["sysctl", "-n", key]).strip()
    return values


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _processes(runner: ExecIn, namespace: str) -> list[list[str]]:
    """The long-lived processes of the namespace: the lab's sshd daemon, QEMU, ...

    Left out: SSH sessions (every sshd that is not the listener) and all their descendants
    (host agents, sudo, shells), orphaned host agents, and this snapshot's own `ip`.
    """
    out = run_in(runner, namespace, ["ip", "netns", "pids", namespace])
    pids = [int(tok) for tok in out.split() if tok.isdigit()]
    argv: dict[int, list[str]] = {}
    parent: dict[int, int] = {}
    for pid in pids:
        raw = _read(f"/proc/{pid}/cmdline")
        stat = _read(f"/proc/{pid}/stat")
        if not raw or stat is None:
            continue  # exited meanwhile, or a kernel thread
        argv[pid] = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
        try:
            parent[pid] = int(stat.rsplit(b")", 1)[1].split()[1])
        except (IndexError, ValueError):
            parent[pid] = 0

    def rollback(pid: int) -> bool:  # kvmnet's own detached process: state, not a session
        return ROLLBACK_MARKER in " ".join(argv[pid])

    def transient(pid: int) -> bool:
        args = argv[pid]
        title = " ".join(args)
        if rollback(pid):
            return False
        if args[0].startswith("sshd:") or args[0].endswith("/sshd") or args[0] == "sshd":
            return "[listener]" not in title
        if any(marker in title for marker in AGENT_MARKERS):
            return True
        return args[:3] == ["ip", "netns", "pids"]

    dropped = {pid for pid in argv if transient(pid)}
    changed = True
    while changed:  # descendants of a dropped process are dropped too
        changed = False
        for pid in argv:
            if pid not in dropped and parent.get(pid) in dropped and not rollback(pid):
                dropped.add(pid)
                changed = True
    kept = []
    for pid, args in argv.items():
        if pid in dropped:
            continue
        if "[listener]" in " ".join(args):
            # "sshd: /usr/sbin/sshd -f CONF [listener] 0 of 100-200 startups": drop the count
            args = [SSHD_LISTENER_RE.sub(" [listener]", " ".join(args))]
        kept.append(args)
    return sorted(kept)


def host_snapshot(runner: ExecIn, namespace: str) -> dict[str, Any]:
    """Links, addresses, routes, iptables rules, forwarding sysctls and processes of a host.

    runner: a kvmnet_lab.lab.Lab (its exec_in is used) or a callable
    (namespace, argv) -> stdout that runs argv inside the namespace.
    """
    return {
        "links": _links(runner, namespace),
        "addresses": _addresses(runner, namespace),
        "routes4": _routes(runner, namespace, "-4"),
        "routes6": _routes(runner, namespace, "-6"),
        "iptables": _rules(runner, namespace, "iptables-legacy-save"),
        "ip6tables": _rules(runner, namespace, "ip6tables-legacy-save"),
        "sysctls": _sysctls(runner, namespace),
        "processes": _processes(runner, namespace),
        "run_dir": _run_dir(runner, namespace),
        "disk_dir": _run_dir(runner, namespace, DISK_ROOT),
        "dnsmasq_dir": _run_dir(runner, namespace, Path(f"{RUN_ROOT}-dnsmasq")),
        "users": _guest_users(runner, namespace),
        "boot_records": _boot_records(runner, namespace),
    }


def _boot_records(runner: ExecIn, namespace: str) -> list[str]:
    """The names of kvmnet's boot records for this namespace (kind and owner digest: the
    same for the same program), under /var/lib/kvmnet/netns-<inode>/records."""
    inode = run_in(runner, namespace, ["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).strip()
    records = DISK_ROOT / f"netns-{inode}" / "records"
    return sorted(p.name for p in records.glob("*.json")) if records.is_dir() else []


def _guest_users(runner: ExecIn, namespace: str) -> list[str]:
    """The users kvmnet made for this namespace's guests (their comment names the namespace:
    lab hosts share one /etc/passwd), as `name comment`."""
    inode = run_in(runner, namespace, ["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).strip()
    found = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        words = fields[4].split() if len(fields) > 4 else []
        if words[:2] == ["kvmnet", "guest"] and f"netns-{inode}" in words:
            found.append(f"{fields[0]} {fields[4]}")
    return sorted(found)


def _run_dir(runner: ExecIn, namespace: str, under: Path = RUN_ROOT) -> dict[str, Any]:
    """What kvmnet keeps for this namespace under /run/kvmnet/netns-<inode> (or, `under`
    /var/lib/kvmnet, its guests' overlays and seeds): each file by its path, JSON documents by
    their content. Left out: lock files and empty documents (kvmnet removes a document and its
    lock once nothing is recorded in it; one interrupted on the way may leave them, and they
    mean nothing), and directories as such."""
    inode = run_in(runner, namespace, ["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).strip()
    root = under / f"netns-{inode}"
    found: dict[str, Any] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*")):
        if path.is_dir() or path.suffix in (".lock", ".tmp") or path.name == "lock":
            continue
        key = str(path.relative_to(root))
        if key.split("/")[0] in BOOT_PARTS:
            continue  # the boot records: by name only, in boot_records
        if path.suffix == ".json":
            try:
                doc = _pruned(json.loads(path.read_text()))
            except (OSError, ValueError):
                doc = "unreadable"
            if doc is not None:
                found[key] = doc
        else:
            found[key] = path.stat().st_mode & 0o170000  # its kind: file, socket, ...
    return found


def _pruned(doc: Any) -> Any:
    """The document without empty parts ({"holders": {}} says nothing), None if all empty."""
    if isinstance(doc, dict):
        kept = {k: v for k, v in ((k, _pruned(v)) for k, v in doc.items()) if v is not None}
        return kept or None
    if isinstance(doc, list):
        items = [v for v in map(_pruned, doc) if v is not None]
        return items or None
    return doc


def diff_snapshots(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal), for asserts."""
    lines: list[str] = []
    for section in sorted(set(before) | set(after)):
        old, new = before.get(section), after.get(section)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    lines.append(f"{section}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
        else:
            lines.append(f"{section}: {old!r} -> {new!r}")
    return lines
