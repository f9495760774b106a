"""The Lab: up / status / down orchestration of namespaces, veths, sshd and echo."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kvmnet_provider.agent import hoststate
from kvmnet_provider.agent.dhcp import account as dhcp_account
from kvmnet_provider.agent.guests import disks

from . import echo, guestusers, keys, netns, sshd, vmhost
from .naming import ECHO_PORT, MAX_HOSTS, SSH_PORT, LabNames, host_index, host_name
from .sshclient import ssh_reachable
from .state import ExtStatus, HostStatus, LabState, LabStatus

DEFAULT_BASE_DIR = Path("/run/kvmnet-lab")
LOCK_DIR = DEFAULT_BASE_DIR / ".locks"
DEFAULT_NAME = "kvmnet"
SSH_USER = "root"

#: entries of the state dir the lab creates (down removes these, then the dir if empty)
_STATE_ENTRIES = (
    "state.json", "id_ed25519", "id_ed25519.pub", "authorized_keys", "known_hosts",
    "known_hosts.tmp", "authorized_keys.tmp", "state.json.tmp", "hosts", "ext",
)  # fmt: skip


class LabError(RuntimeError):
    """The lab cannot do what was asked."""


class LabNotUp(LabError):
    """No state for this lab: it was never brought up (or was taken down)."""


class SubnetConflict(LabError):
    """The lab's /24 is already in use in the root namespace by something else."""


def default_name() -> str:
    return os.environ.get("KVMNET_LAB_NAME") or DEFAULT_NAME


def default_state_dir(name: str) -> Path:
    env = os.environ.get("KVMNET_LAB_DIR")
    return Path(env) if env else DEFAULT_BASE_DIR / name


class Lab:
    """A lab of fake remote KVM hosts made of network namespaces.

    >>> lab = Lab("kvmnet", Path("/run/kvmnet-lab/kvmnet"))
    >>> status = lab.up(hosts=2); lab.status(); lab.down()
    """

    def __init__(self, name: str | None = None, state_dir: Path | str | None = None) -> None:
        self.name = name or default_name()
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(self.name)
        self.state_dir = self.state_dir.absolute()
        state = LabState.load(self.state_dir)
        octet = state.octet if state is not None and state.name == self.name else None
        self.names = LabNames.for_name(self.name, octet)

    # --- paths ------------------------------------------------------------------------
    @property
    def private_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.state_dir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    def host_dir(self, host: str) -> Path:
        return self.state_dir / "hosts" / host

    @property
    def ext_dir(self) -> Path:
        return self.state_dir / "ext"

    @property
    def echo_log(self) -> Path:
        return self.ext_dir / "echo.log"

    @property
    def echo_pidfile(self) -> Path:
        return self.ext_dir / "echo.pid"

    # --- helpers ----------------------------------------------------------------------
    @property
    def _lock_path(self) -> Path:
        return LOCK_DIR / f"{self.name}.lock"

    @contextlib.contextmanager
    def _locked(self, remove: bool = False) -> Iterator[None]:
        """Serialise up/down of one lab name (names are global: namespaces are)."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(self._lock_path, "a")  # noqa: SIM115 - closed below
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(self._lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()  # removed by a concurrent down while we waited: lock the new file
        try:
            yield
        finally:
            if remove:
                self._lock_path.unlink(missing_ok=True)
            f.close()

    def namespace(self, ns: str) -> str:
        """Full namespace name for 'sw', 'ext', 'h1'... (full names pass through)."""
        full = ns if ns.startswith(self.names.prefix) else self.names.prefix + ns
        if not self.names.owns_namespace(full):
            raise LabError(f"{ns!r} is not a namespace of lab {self.name!r}")
        return full

    def exec_in(
        self, namespace: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(argv) inside one of the lab's namespaces ('h1' or 'kvmnet-h1')."""
        return subprocess.run(netns.exec_argv(self.namespace(namespace), list(argv)), **kwargs)

    def recorded_pids(self) -> dict[str, int]:
        """PIDs of the processes `up` started (sshd per host, the echo service)."""
        state = LabState.load(self.state_dir)
        return dict(state.pids) if state else {}

    def existing_namespaces(self) -> list[str]:
        return [ns for ns in netns.list_namespaces() if self.names.owns_namespace(ns)]

    def _check_subnet(self) -> None:
        lan = self.names.lan
        mine = self.names.root_veth
        for ifname, addr, plen in netns.root_addresses():
            net = ipaddress.IPv4Network(f"{addr}/{plen}", strict=False)
            if ifname != mine and net.overlaps(lan):
                raise SubnetConflict(
                    f"lab {self.name!r} wants {lan} but {addr}/{plen} is on {ifname} "
                    "in the root namespace"
                )
        for route in netns.ip_json("-4", "route", "show"):
            dst = route.get("dst", "")
            if dst in ("", "default") or route.get("dev") == mine:
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.IPv4Network(dst, strict=False).overlaps(lan):
                    raise SubnetConflict(
                        f"lab {self.name!r} wants {lan} but the root namespace routes {dst} "
                        f"via {route.get('dev')}"
                    )

    # --- up ---------------------------------------------------------------------------
    def up(self, hosts: int = 2) -> LabStatus:
        """Build (or repair) the lab with `hosts` KVM hosts; idempotent. Returns status()."""
        if not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"hosts must be within 1..{MAX_HOSTS}")
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veth)")
        with self._locked():
            self._up(hosts)
        return self.status()

    def _up(self, count: int) -> None:
        n = self.names
        state = LabState.load(self.state_dir)
        if state is not None and state.name != self.name:
            raise LabError(f"{self.state_dir} holds lab {state.name!r}, not {self.name!r}")
        self._check_subnet()
        if state is None:
            state = LabState(name=self.name, octet=n.octet)
        previous = state.hosts
        state.hosts = max(count, previous)  # until extras are removed, down must see them
        state.save(self.state_dir)  # first, so that down finds a half-built lab

        # hosts beyond `count` from a previous, larger up
        for ns in self.existing_namespaces():
            role = ns[len(n.prefix) :]
            if role.startswith("h") and host_index(role) > count:
                self._remove_namespace(ns)
                netns.delete_link(n.host_port(host_index(role)), ns=n.switch_ns)
                shutil.rmtree(self.host_dir(role), ignore_errors=True)
                state.pids.pop(role, None)
        for i in range(count + 1, previous + 1):
            shutil.rmtree(self.host_dir(host_name(i)), ignore_errors=True)
            state.pids.pop(host_name(i), None)
        state.hosts = count
        state.save(self.state_dir)

        # switch: a bridge with the LAN gateway address, no forwarding out of the lab
        netns.ensure_namespace(n.switch_ns)
        netns.set_sysctl(n.switch_ns, "net.ipv4.ip_forward", "0")
        netns.ensure_bridge(n.bridge, n.switch_ns)
        netns.ensure_address(n.bridge, n.cidr(n.gateway), ns=n.switch_ns)

        # the operator's seat: one veth from the root namespace to the switch
        netns.ensure_veth(n.root_veth, None, n.switch_op_port, n.switch_ns)
        netns.ensure_address(n.root_veth, n.cidr(n.operator_address))
        netns.link_up(n.root_veth)
        netns.set_master(n.switch_op_port, n.bridge, n.switch_ns)

        # KVM hosts
        for i in range(1, count + 1):
            ns = n.host_ns(i)
            netns.ensure_namespace(ns)
            netns.ensure_veth(n.host_port(i), n.switch_ns, n.guest_if, ns)
            netns.set_master(n.host_port(i), n.bridge, n.switch_ns)
            netns.ensure_address(n.guest_if, n.cidr(n.host_address(i)), ns=ns)
            netns.link_up(n.guest_if, ns=ns)
            netns.ensure_default_route(n.gateway, ns=ns)

        # outside host: on the LAN, only its connected route
        netns.ensure_namespace(n.ext_ns)
        netns.set_sysctl(n.ext_ns, "net.ipv4.ip_forward", "0")
        netns.ensure_veth(n.ext_port, n.switch_ns, n.guest_if, n.ext_ns)
        netns.set_master(n.ext_port, n.bridge, n.switch_ns)
        netns.ensure_address(n.guest_if, n.cidr(n.ext_address), ns=n.ext_ns)
        netns.link_up(n.guest_if, ns=n.ext_ns)

        # keys
        client_pub = keys.ensure_ed25519_key(self.private_key, f"kvmnet-lab-{self.name}")
        keys.write_authorized_keys(self.authorized_keys, [client_pub])
        self.write_known_hosts(count)

        # services
        for i in range(1, count + 1):
            files = sshd.SshdFiles(self.host_dir(host_name(i)))
            state.pids[host_name(i)] = sshd.ensure_sshd(
                n.host_ns(i), files, n.host_address(i), SSH_PORT, self.authorized_keys
            )
            state.save(self.state_dir)
        self.ext_dir.mkdir(parents=True, exist_ok=True)
        state.pids["ext-echo"] = echo.ensure_echo(
            n.ext_ns, n.ext_address, ECHO_PORT, self.echo_log, self.echo_pidfile,
            self.ext_dir / "echo.err",
        )  # fmt: skip
        state.save(self.state_dir)
        for i in range(1, count + 1):
            sshd.wait_tcp(n.host_address(i), SSH_PORT, timeout=10.0)

    # --- status -----------------------------------------------------------------------
    def status(self, check_ssh: bool = True) -> LabStatus:
        state = LabState.load(self.state_dir)
        if state is None or state.name != self.name:
            raise LabNotUp(f"lab {self.name!r} is not up (no state in {self.state_dir})")
        n = LabNames.for_name(self.name, state.octet)
        hosts = [
            HostStatus(
                name=host_name(i),
                namespace=n.host_ns(i),
                address=n.host_address(i),
                port=SSH_PORT,
                user=SSH_USER,
                private_key=str(self.private_key),
                known_hosts=str(self.known_hosts),
                ssh_reachable=False,
            )
            for i in range(1, state.hosts + 1)
        ]
        if check_ssh and hosts:
            with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
                ok = list(
                    pool.map(
                        lambda h: ssh_reachable(
                            h.address, h.port, h.user, h.private_key, h.known_hosts
                        ),
                        hosts,
                    )
                )
            hosts = [
                HostStatus(**{**h.__dict__, "ssh_reachable": r})
                for h, r in zip(hosts, ok, strict=True)
            ]
        return LabStatus(
            name=self.name,
            state_dir=str(self.state_dir),
            lan=str(n.lan),
            gateway=n.gateway,
            operator_address=n.operator_address,
            hosts=hosts,
            ext=ExtStatus(
                namespace=n.ext_ns,
                address=n.ext_address,
                echo_port=ECHO_PORT,
                echo_log=str(self.echo_log),
            ),
        )

    def write_known_hosts(self, count: int) -> None:
        """Pin every host's key (made here when missing) in the lab's known_hosts: the
        namespace hosts h1..h`count`, and the VM host once its key exists."""
        n = self.names
        entries: list[tuple[str, int, str]] = []
        for i in range(1, count + 1):
            files = sshd.SshdFiles(self.host_dir(host_name(i)))
            host_pub = keys.ensure_ed25519_key(files.host_key, f"{self.name}-{host_name(i)}")
            entries.append((n.host_address(i), SSH_PORT, host_pub))
        vm_entry = vmhost.known_hosts_entry(self.state_dir, n)
        if vm_entry is not None:
            entries.append(vm_entry)
        keys.write_known_hosts(self.known_hosts, entries)

    # --- down -------------------------------------------------------------------------
    def down(self) -> None:
        """Remove every namespace, veth, process and file of the lab; fine if half-built."""
        with self._locked(remove=True):
            self._down()

    def _remove_namespace(self, ns: str) -> None:
        netns.kill_namespace_processes(ns)
        self._forget_agent_books(ns)
        netns.delete_namespace(ns)

    @staticmethod
    def _forget_agent_books(ns: str) -> None:
        """kvmnet's host agent keeps its books per network namespace, keyed by its inode
        (/run/kvmnet/netns-<inode>), and its guests' overlays and seeds likewise
        (/var/lib/kvmnet/netns-<inode>), dnsmasq's hosts files (/run/kvmnet-dnsmasq/...) and
        the users its guests ran as (named by the inode in their comment); a deleted lab host
        takes all of them with it. Left behind, they would pile up, and the kernel gives a
        later namespace the same inode."""
        try:
            inode = os.stat(f"/run/netns/{ns}").st_ino
        except OSError:
            return
        for root in (hoststate.ROOT, disks.ROOT, dhcp_account.root()):
            shutil.rmtree(root / f"netns-{inode}", ignore_errors=True)
        guestusers.remove_namespace_users(f"netns-{inode}")

    def _pidfile_pids(self) -> list[int]:
        """PIDs from our pidfiles/state that still run *our* program (checked by cmdline)."""
        found: list[int] = []
        hosts_dir = self.state_dir / "hosts"
        if hosts_dir.is_dir():
            for d in sorted(hosts_dir.iterdir()):
                pid = sshd.running_pid(sshd.SshdFiles(d))
                if pid is not None:
                    found.append(pid)
        pid = echo.running_pid(self.echo_pidfile)
        if pid is not None:
            found.append(pid)
        state = LabState.load(self.state_dir)
        if state is not None:
            for role, pid in state.pids.items():
                cmd = netns.pid_cmdline(pid)
                marker = echo.MODULE if role == "ext-echo" else str(self.host_dir(role))
                if netns.pid_alive(pid) and any(marker in part for part in cmd):
                    found.append(pid)
        return sorted(set(found))

    def _down(self) -> None:
        n = self.names
        vmhost.stop_vm_host(self)  # by its PID, before its namespace goes
        for ns in self.existing_namespaces():
            netns.kill_namespace_processes(ns)
        # processes whose namespace was already deleted by hand are found by pidfile
        netns.terminate_pids(self._pidfile_pids())
        for ns in self.existing_namespaces():
            self._forget_agent_books(ns)
            netns.delete_namespace(ns)
        netns.delete_link(n.root_veth)
        left = self.existing_namespaces()
        if left:
            raise LabError(f"could not delete namespaces {left}")
        self._remove_state_dir()

    def _remove_state_dir(self) -> None:
        if not self.state_dir.is_dir():
            return
        for entry in _STATE_ENTRIES:
            p = self.state_dir / entry
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()  # only if nothing else is in it


@contextlib.contextmanager
def fresh_lab(
    prefix: str, hosts: int, base: Path | None = None, tries: int = 5
) -> Iterator[tuple[Lab, LabStatus]]:
    """A lab named `prefix<random hex>` for one test run or benchmark, always taken down.

    Another lab may hold the /24 a random name hashes to: then another name is drawn. The
    state lives under `base/<name>` (default: /run/kvmnet-lab/<name>).
    """
    last: Exception | None = None
    for _ in range(tries):
        name = prefix + secrets.token_hex(3)
        lab = Lab(name, base / name if base is not None else None)
        try:
            status = lab.up(hosts=hosts)
        except SubnetConflict as exc:
            last = exc
            lab.down()
            continue
        except BaseException:
            lab.down()
            raise
        try:
            yield lab, status
        finally:
            lab.down()
        return
    raise LabError(f"no free lab subnet after {tries} names: {last}")
