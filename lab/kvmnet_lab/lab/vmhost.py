"""A real KVM host for the lab: the Debian VM-host image booted under QEMU on the lab LAN.

The namespace hosts share this machine's kernel and have no systemd; the VM host has both, so
what happens at a real boot (kvmnet-restore.service) can be tried on it. QEMU runs in the
lab's switch namespace with its NIC on a tap in the LAN bridge, on a copy-on-write overlay of
the image. cloud-init (NoCloud) gives it a static LAN address, root's authorized key (the
lab's client key) and an SSH host key the lab made beforehand and pinned in known_hosts, so
the first connection already checks the host key. A reboot inside the VM resets it within
the same QEMU process: the lab starts and stops QEMU by its PID only.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kvmnet_provider.cloudinit import build_seed

from . import keys, netns, sshd
from .naming import SSH_PORT, LabNames
from .sshclient import ssh_reachable
from .state import HostStatus, LabState

if TYPE_CHECKING:
    from .core import Lab

VM_ROLE = "vm"
TAP = "vm"  # in the switch namespace, a port of the LAN bridge
MAC = "52:54:00:6b:76:01"
# The VM's LAN address: the next after the outside host (.100), beyond every namespace host.
ADDRESS_OCTET = 101
MEMORY_MIB = 1024
# net.ifnames=0: the one NIC is eth0, whatever PCI slot QEMU gives it.
CMDLINE = "root=/dev/vda console=ttyS0 quiet net.ifnames=0"
BOOT_TIMEOUT = 600.0
CLOUD_INIT_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at")


class VmHostError(RuntimeError):
    """The VM host cannot be started or reached."""


@dataclass(frozen=True)
class VmHost:
    """A running VM host: how to reach it, its QEMU PID and its serial console log."""

    address: str
    port: int
    user: str
    private_key: str
    known_hosts: str
    pid: int
    console_log: str
    accelerator: str

    def host_status(self) -> HostStatus:
        """As a lab host for kvmnet's connection settings (it has no namespace of its own)."""
        return HostStatus(
            name=VM_ROLE, namespace="", address=self.address, port=self.port, user="root",
            private_key=self.private_key, known_hosts=self.known_hosts, ssh_reachable=True,
        )  # fmt: skip


def vm_address(names: LabNames) -> str:
    return str(names.lan.network_address + ADDRESS_OCTET)


def vm_dir(lab: Lab) -> Path:
    # Under hosts/: lab down finds the QEMU by the recorded PID whose command line names it.
    return lab.host_dir(VM_ROLE)


def host_key_path(state_dir: Path) -> Path:
    return state_dir / "hosts" / VM_ROLE / "ssh_host_ed25519_key"


def known_hosts_entry(state_dir: Path, names: LabNames) -> tuple[str, int, str] | None:
    """The VM's pinned host key for the lab's known_hosts, once the lab made one."""
    pub = host_key_path(state_dir).with_suffix(".pub")
    if not pub.is_file():
        return None
    return vm_address(names), SSH_PORT, pub.read_text().strip()


def accelerator() -> str:
    """``$KVMNET_VM_ACCEL`` (kvm or tcg), else TCG: where this machine is itself a VM, a
    guest under nested KVM was seen spinning without a line of output, TCG boots anywhere."""
    accel = os.environ.get("KVMNET_VM_ACCEL", "tcg").strip().lower() or "tcg"
    if accel not in ("kvm", "tcg"):
        raise VmHostError(f"KVMNET_VM_ACCEL must be kvm or tcg, not {accel!r}")
    return accel


def seed_files(names: LabNames, client_pub: str, host_key: Path) -> dict[str, bytes]:
    """NoCloud user-data, meta-data and network-config of the VM host."""
    user_data = {
        "disable_root": False,
        "ssh_authorized_keys": [client_pub],
        "ssh_pwauth": False,
        # The lab's key only: nothing generated at boot, so known_hosts holds the one key.
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {
            "ed25519_private": host_key.read_text(),
            "ed25519_public": host_key.with_suffix(".pub").read_text().strip(),
        },
    }
    network = {
        "version": 1,
        "config": [{
            "type": "physical", "name": "eth0", "mac_address": MAC,
            "subnets": [{
                "type": "static", "address": f"{vm_address(names)}/{names.lan.prefixlen}",
                "gateway": names.gateway,
            }],
        }],
    }  # fmt: skip
    meta = {"instance-id": f"kvmnet-lab-{names.name}-vm", "local-hostname": "kvmhost"}
    return {
        "user-data": ("#cloud-config\n" + yaml.safe_dump(user_data)).encode(),
        "meta-data": yaml.safe_dump(meta).encode(),
        "network-config": yaml.safe_dump(network).encode(),
    }


def qemu_argv(d: Path, image: Path, accel: str) -> list[str]:
    # QEMU's default CPU model: `-cpu host` fails where this machine is itself a VM (nested
    # KVM refuses some of the host's MSRs).
    return [
        "qemu-system-x86_64", "-name", "kvmnet-lab-vm", "-machine", f"pc,accel={accel}",
        "-m", str(MEMORY_MIB), "-smp", "2", "-nodefaults", "-display", "none",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        "-append", CMDLINE,
        "-drive", f"file={d / 'disk.qcow2'},format=qcow2,if=virtio",
        "-drive", f"file={d / 'seed.iso'},format=raw,if=virtio,readonly=on",
        "-netdev", f"tap,id=lan,ifname={TAP},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=lan,mac={MAC}",
        "-chardev", f"file,id=console,path={d / 'console.log'}", "-serial", "chardev:console",
        "-pidfile", str(d / "qemu.pid"),
    ]  # fmt: skip


def start_vm_host(lab: Lab, image: Path, timeout: float = BOOT_TIMEOUT) -> VmHost:
    """Boot the VM host on the (up) lab's LAN and wait until its sshd answers; idempotent
    while it runs. Raises VmHostError (QEMU stopped) if it does not come up."""
    state = LabState.load(lab.state_dir)
    if state is None:
        raise VmHostError(f"lab {lab.name!r} is not up: run `kvmnet lab up` first")
    n, d = lab.names, vm_dir(lab)
    pid = state.pids.get(VM_ROLE)
    if pid is None or not _is_our_qemu(pid, d):
        pid = _boot(lab, state, image, d)
    host = VmHost(
        address=vm_address(n), port=SSH_PORT, user="root", private_key=str(lab.private_key),
        known_hosts=str(lab.known_hosts), pid=pid, console_log=str(d / "console.log"),
        accelerator=accelerator(),
    )  # fmt: skip
    try:
        wait_for_cloud_init(host, timeout)
        wait_for_ssh(host, timeout)
    except VmHostError:
        stop_vm_host(lab)
        raise
    return host


def _boot(lab: Lab, state: LabState, image: Path, d: Path) -> int:
    n = lab.names
    for f in ("disk.qcow2", "vmlinuz", "initrd.img"):
        if not (image / f).is_file():
            raise VmHostError(f"VM host image {image} has no {f}: run scripts/build-debian-image "
                              "--vmhost")  # fmt: skip
    d.mkdir(parents=True, exist_ok=True)
    for f in ("disk.qcow2", "seed.iso", "console.log", "qemu.pid"):
        (d / f).unlink(missing_ok=True)  # a fresh host each boot of the lab's VM
    netns.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
               str(image / "disk.qcow2"), str(d / "disk.qcow2"), "8G"])  # fmt: skip
    client_pub = keys.ensure_ed25519_key(lab.private_key, f"kvmnet-lab-{lab.name}")
    keys.ensure_ed25519_key(host_key_path(lab.state_dir), f"{lab.name}-{VM_ROLE}")
    seed = build_seed(seed_files(n, client_pub, host_key_path(lab.state_dir)))
    _write_bytes(d / "seed.iso", seed)  # 0600: it holds the host's private key
    lab.write_known_hosts(state.hosts)  # the VM's key pinned beside the others'

    netns.delete_link(TAP, ns=n.switch_ns)
    netns.run(netns.exec_argv(n.switch_ns, ["ip", "tuntap", "add", "dev", TAP, "mode", "tap"]))
    netns.set_master(TAP, n.bridge, n.switch_ns)
    netns.link_up(TAP, ns=n.switch_ns)
    log = open(d / "qemu.log", "ab")  # noqa: SIM115 - the child keeps its own copy
    try:
        proc = subprocess.Popen(
            netns.exec_argv(n.switch_ns, qemu_argv(d, image, accelerator())),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()
    state.pids[VM_ROLE] = proc.pid  # `ip netns exec` execs QEMU: this PID is QEMU's
    state.save(lab.state_dir)
    return proc.pid


def _write_bytes(path: Path, data: bytes) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)


def _is_our_qemu(pid: int, d: Path) -> bool:
    return netns.pid_alive(pid) and any(str(d) in part for part in netns.pid_cmdline(pid))


def wait_for_cloud_init(host: VmHost, timeout: float) -> None:
    """Wait for cloud-init's last line on the console: before it, the sshd that answers may
    still be restarted by cloud-init (new keys, password settings) and refuse for a moment."""
    deadline = time.monotonic() + timeout
    log = Path(host.console_log)
    while time.monotonic() < deadline:
        if not netns.pid_alive(host.pid):
            raise VmHostError(f"VM host QEMU (PID {host.pid}) exited; see {host.console_log}")
        if log.is_file() and CLOUD_INIT_FINISHED.search(log.read_text(errors="replace")):
            return
        time.sleep(1.0)
    raise VmHostError(f"VM host {host.address}: cloud-init did not finish within {timeout:.0f}s; "
                      f"see {host.console_log}")  # fmt: skip


def wait_for_ssh(host: VmHost, timeout: float) -> float:
    """Wait until the VM's sshd runs a command for us (host key checked); returns seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not netns.pid_alive(host.pid):
            raise VmHostError(f"VM host QEMU (PID {host.pid}) exited; see {host.console_log}")
        try:
            sshd.wait_tcp(host.address, host.port, timeout=2.0)
        except Exception:
            continue
        if ssh_reachable(host.address, host.port, host.user, host.private_key, host.known_hosts):
            return time.monotonic() - started
        time.sleep(1.0)
    raise VmHostError(
        f"VM host {host.address}: sshd did not answer within {timeout:.0f}s; see {host.console_log}"
    )


def stop_vm_host(lab: Lab) -> None:
    """Stop the VM's QEMU by its recorded PID and remove its tap; fine if it is not running."""
    state = LabState.load(lab.state_dir)
    d = vm_dir(lab)
    if state is not None:
        pid = state.pids.pop(VM_ROLE, None)
        if pid is not None and _is_our_qemu(pid, d):
            netns.terminate_pids([pid], timeout=10.0)
        state.save(lab.state_dir)
    if netns.namespace_exists(lab.names.switch_ns):
        netns.delete_link(TAP, ns=lab.names.switch_ns)
