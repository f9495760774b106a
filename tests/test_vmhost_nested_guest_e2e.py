"""A guest on the lab's VM host: the busybox test guest, copied into the VM, run by kvmnet's
QemuGuest on a NAT network with DHCP (TCG inside TCG). It leases its address and reaches the
outside host through the VM's masquerade; after a real `systemctl reboot`, with no Pulumi
command, kvmnet-restore.service starts it again, it leases again and reaches the outside,
and `pulumi refresh` finds nothing changed. Destroy leaves the VM as it was."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab.sshclient import open_client
from kvmnet_lab.lab.vmhost import VmHost
from kvmnet_lab.testing import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots
from kvmnet_lab.testing.stack import TestStack
from vmhost_support import UNIT, host_view, reboot, sh, wait_for_restore

pytestmark = [pytest.mark.e2e, pytest.mark.vmhost]

IMAGE_ON_VM = "/var/lib/kvmnet-lab-guest"
NAME = "ng1"
PROGRAM = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.models import GuestSpec, NetworkArgs, network_for_model

conn = HostSettings(**{conn!r})
guest = GuestSpec(
    name={name!r}, tap="vng1.0", mac="52:54:00:00:09:01", memory_mib=128,
    kernel="{image}/vmlinuz", initrd="{image}/initrd.img",
    cmdline="console=ttyS0 quiet panic=-1 kvmnet.name={name} kvmnet.ip=dhcp", stop_timeout=2,
    ready={{"console": "KVMNET-GUEST-READY {name}", "lease": True, "timeout": 1500}},
)
net = network_for_model("nat")("net", NetworkArgs(
    connection=conn, bridge="kgbr", subnet="10.0.91.0/24", gateway="10.0.91.254",
    uplink="eth0", guests=[guest], accelerator="tcg",
))
pulumi.export("console", net.guests[{name!r}].console_socket)
"""

# Runs on the VM: one command on the guest's serial console, its output and exit status.
ON_CONSOLE = """python3 - <<'EOF'
import re, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect({path!r})
s.settimeout(1.0)
s.sendall(b"\\n" + {command!r}.encode() + b"; echo KV-DONE-$?\\n")
buf, deadline = b"", time.monotonic() + {timeout}
while time.monotonic() < deadline and not re.search(rb"KV-DONE-\\d", buf):
    try:
        buf += s.recv(65536)
    except socket.timeout:
        pass
print(buf.decode(errors="replace"))
EOF"""


def copy_guest_image(host: VmHost) -> None:
    client = open_client(host.address, host.port, host.user, host.private_key, host.known_hosts)
    try:
        sftp = client.open_sftp()
        sftp.mkdir(IMAGE_ON_VM, 0o755)
        for name in ("vmlinuz", "initrd.img"):
            sftp.put(str(guest_image_dir() / name), f"{IMAGE_ON_VM}/{name}")
            sftp.chmod(f"{IMAGE_ON_VM}/{name}", 0o644)
        sftp.close()
    finally:
        client.close()


def on_console(host: VmHost, path: str, command: str, timeout: float = 60.0) -> tuple[int, str]:
    """(exit status, output) of `command` in the guest's shell; -1 when it did not finish."""
    script = ON_CONSOLE.format(path=path, command=command, timeout=timeout)
    out = sh(host, script, timeout=timeout + 30)
    done = re.search(r"KV-DONE-(\d+)", out)
    return (int(done.group(1)) if done else -1), out


def outside_host(host: VmHost) -> str:
    """The VM's default gateway: the lab's host outside the VM."""
    found = re.search(r"default via (\S+)", sh(host, "ip -4 route show default"))
    assert found, "the VM has no default route"
    return found.group(1)


def reaches_outside(host: VmHost, console: str, target: str, within: float) -> float:
    """Seconds until the guest holds its lease and pings `target` (tried until `within`)."""
    started = time.monotonic()
    out = ""
    while time.monotonic() - started < within:
        try:
            status, out = on_console(host, console, f"ping -c 1 -W 5 {target}", 40)
        except AssertionError as failed:  # no console socket yet: QEMU not started yet
            status, out = -1, str(failed)
        if status == 0:
            return time.monotonic() - started
        time.sleep(5.0)
    raise AssertionError(f"the guest did not reach {target} within {within:.0f}s: {out[-600:]}")


def test_a_nested_guest_leases_reaches_the_outside_and_comes_back_after_a_reboot(
    tmp_path: Path, vm_host: VmHost
) -> None:
    before = host_view(vm_host)
    conn = host_settings(vm_host.host_status(), "/usr/bin/python3").to_props()
    program = textwrap.dedent(PROGRAM).format(conn=conn, name=NAME, image=IMAGE_ON_VM)
    stack = TestStack(tmp_path, program, project="kvnest")
    try:
        copy_guest_image(vm_host)
        started = time.monotonic()
        stack.up()
        print(f"\nnested guest: `up` until it leased and printed READY: "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip
        console, target = stack.outputs()["console"], outside_host(vm_host)
        print(f"it reached {target} after {reaches_outside(vm_host, console, target, 120):.1f}s")

        took = reboot(vm_host)
        back = time.monotonic()
        restored = wait_for_restore(vm_host)
        journal = sh(vm_host, f"journalctl -b -u {UNIT} --no-pager -o cat")
        assert "0 failed, 0 skipped" in journal, journal
        reached = reaches_outside(vm_host, console, target, 1500) + (time.monotonic() - back)
        print(f"VM rebooted in {took:.1f}s, the restore ran {restored:.1f}s; the guest reached "
              f"{target} {reached:.1f}s after sshd answered")  # fmt: skip
        refreshed = stack.pulumi("refresh", "--yes", "--expect-no-changes", "--diff")
        assert " updated" not in refreshed.stdout, refreshed.stdout
        stack.destroy()
        assert diff_snapshots(before, host_view(vm_host)) == []
    finally:
        stack.remove()
        sh(vm_host, f"rm -rf {IMAGE_ON_VM}")
