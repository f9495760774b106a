"""Faults a lab host can meet: a host "reboot", packet loss on the lab's switch, and kvmnet's
objects broken behind its back (a process killed, a link deleted, its rules flushed).

All act only inside the lab's own namespaces (the host's and the switch's), never in the
root namespace.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kvmnet_provider.agent import hoststate
from kvmnet_provider.agent.boot import records
from kvmnet_provider.agent.dhcp import account as dhcp_account

from . import guestusers, netns
from .naming import host_index
from .state import LabState

if TYPE_CHECKING:
    from .core import Lab

LOSS_TABLE = "kvmnet_lab_loss"  # the switch's nft table that drops a host's frames


def _namespace_inode(ns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


def reboot_host(lab: Lab, host: str, run_dir_survives: bool = True) -> None:
    """Rebuild host `host` ("h1") as a reboot leaves it: a new network namespace (every link,
    address, route, firewall rule and sysctl gone, every process in it killed: QEMU guests,
    kvmnet's agents and rollbacks, sshd), then the lab's own setup again with the same address,
    NIC MAC and host key. kvmnet's records for the old namespace (/run/kvmnet/netns-<inode>)
    are moved to the new one's inode: stale records, as on a host whose /run outlived the
    reboot; with `run_dir_survives` False they go, as a real reboot empties /run. kvmnet's
    boot records (/var/lib/kvmnet/netns-<inode>) always follow the namespace: a real host's
    init namespace keeps its inode across reboots."""
    ns, names = lab.namespace(host), lab.names
    port = names.host_port(host_index(host))
    old = _namespace_inode(ns)
    # The NIC keeps its MAC across a reboot (and the LAN's neighbour caches stay right).
    (nic,) = netns.ip_json("link", "show", "dev", names.guest_if, ns=ns)
    netns.kill_namespace_processes(ns)
    netns.delete_namespace(ns)
    netns.delete_link(port, ns=names.switch_ns)
    netns.ensure_namespace(ns)
    netns.ensure_veth(port, names.switch_ns, names.guest_if, ns)
    netns.ip("link", "set", "dev", names.guest_if, "address", nic["address"], ns=ns)
    state = LabState.load(lab.state_dir)
    lab.up(hosts=state.hosts if state is not None else host_index(host))
    new = _namespace_inode(ns)
    if old is None or new is None or old == new:
        if not run_dir_survives and old is not None:
            for root in (hoststate.ROOT, dhcp_account.root()):
                shutil.rmtree(root / f"netns-{old}", ignore_errors=True)
        return  # the kernel gave the new namespace the old inode: the records are in place
    kept = records.ROOT / f"netns-{old}"
    if kept.is_dir():
        shutil.rmtree(records.ROOT / f"netns-{new}", ignore_errors=True)
        kept.rename(records.ROOT / f"netns-{new}")
    # Named by an inode, users serve only that namespace: the old one's would serve no later
    # guest, and any named by the new inode are a dead namespace's (nothing ran here yet).
    for label in (f"netns-{old}", f"netns-{new}"):
        guestusers.remove_namespace_users(label)
    for root in (hoststate.ROOT, dhcp_account.root()):  # /run: kept, or emptied by the reboot
        books, moved = root / f"netns-{old}", root / f"netns-{new}"
        shutil.rmtree(moved, ignore_errors=True)  # nothing of kvmnet's has run there yet
        if books.is_dir() and not run_dir_survives:
            shutil.rmtree(books, ignore_errors=True)
        elif books.is_dir():
            books.rename(moved)


@contextlib.contextmanager
def frames_dropped(lab: Lab, host: str) -> Iterator[None]:
    """While the block runs, the lab's switch drops every frame to and from host `host`
    (an nft bridge-family table in the switch's namespace); removed on the way out."""
    port = lab.names.host_port(host_index(host))
    switch = lab.names.switch_ns
    rules = (
        f"table bridge {LOSS_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority -200; policy accept;\n"
        f'    iifname "{port}" drop\n'
        f'    oifname "{port}" drop\n'
        "  }\n"
        "}\n"
    )
    _nft(switch, "-f", "-", stdin=rules)
    try:
        yield
    finally:
        _nft(switch, "delete", "table", "bridge", LOSS_TABLE)


def _nft(ns: str, *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        netns.exec_argv(ns, ["nft", *args]), input=stdin, text=True, check=True, timeout=30
    )


# --- faults behind kvmnet's back, each acting on kvmnet's objects only ------------------------
def processes(ns: str, name: str) -> list[int]:
    """PIDs of the processes in namespace `ns` whose program's name contains `name`."""
    return sorted(
        pid
        for pid in netns.namespace_pids(ns)
        if (argv := netns.pid_cmdline(pid)) and name in os.path.basename(argv[0])
    )


def kill_processes(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kvmnet_links(ns: str, kind: str) -> list[str]:
    """Names of the links of `kind` (bridge, tun) that carry kvmnet's owner mark."""
    return sorted(
        link["ifname"]
        for link in netns.ip_json("-d", "link", "show", ns=ns)
        if str(link.get("ifalias", "")).startswith("kvmnet:")
        and (link.get("linkinfo") or {}).get("info_kind") == kind
    )


def flush_kvmnet_rules(ns: str) -> int:
    """Delete kvmnet's iptables-legacy rules (its KVMNET_* chains flushed, its commented rules
    in the built-in chains deleted) and kvmnet's nftables tables; nothing of anyone else's.
    Returns how many rules or tables went."""
    gone = 0
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        for table in ("filter", "nat"):
            listing = _run(ns, [tool, "-t", table, "-S"])
            for line in listing.splitlines():
                words = line.split()
                if line.startswith("-N KVMNET"):
                    _run(ns, [tool, "-t", table, "-F", words[1]])
                    gone += 1
                elif line.startswith("-A ") and not words[1].startswith("KVMNET") and (
                    "kvmnet" in line
                ):
                    _run(ns, [tool, "-t", table, "-D", *shlex.split(line)[1:]])
                    gone += 1
    for line in _run(ns, ["nft", "list", "tables"]).splitlines():
        words = line.split()  # "table inet kvmnet"
        if len(words) == 3 and words[2].startswith("kvmnet"):
            _run(ns, ["nft", "delete", "table", words[1], words[2]])
            gone += 1
    return gone


def _run(ns: str, argv: list[str]) -> str:
    return subprocess.run(
        netns.exec_argv(ns, argv), capture_output=True, text=True, check=True, timeout=30
    ).stdout
