"""The bridged model's takeover on an uplink the namespace lab's kernel cannot make (real
engine, the lab's VM host): a bond (eth0 its port) holding the host's address. `up` keeps the
SSH session in, `destroy` gives the layout back exactly, and a bridge address that cuts the host
off is undone by the host, its routes exactly as before. Each test lays the VM's NIC out
live and puts eth0 back as cloud-init made it, whatever happened."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.lab.sshclient import open_client, run_command
from kvmnet_lab.lab.vmhost import VmHost
from kvmnet_lab.testing.operator import failed_up
from kvmnet_lab.testing.snapshot import diff_snapshots
from kvmnet_lab.testing.stack import TestStack
from vmhost_layouts import BOND, Plain, bond_script, laid, plain_of
from vmhost_support import host_view, network_stack, sh

pytestmark = [pytest.mark.e2e, pytest.mark.vmhost]

BRIDGE = "kaup"
# Under TCG on a busy machine the confirming login takes seconds.
ROLLBACK_SECONDS = 60


@pytest.fixture()
def plain(vm_host: VmHost) -> Iterator[Plain]:
    """eth0 as found; the test must leave the VM's network exactly so."""
    before = host_view(vm_host)
    yield plain_of(vm_host)
    assert diff_snapshots(before, host_view(vm_host)) == []


def wrong_address(plain: Plain) -> str:
    """A bridge address in the host's subnet that nobody reaches it on."""
    iface = ipaddress.ip_interface(plain.address)
    return f"{iface.network.network_address + 77}/{iface.network.prefixlen}"


def bridged_stack(
    tmp_path: Path, host: VmHost, project: str, uplink: str, **args: object
) -> TestStack:
    return network_stack(
        tmp_path, host, project, model="bridged", bridge=BRIDGE, uplink=uplink,
        rollback_seconds=ROLLBACK_SECONDS, **args,
    )  # fmt: skip


def takeover_keeps_ssh_and_destroy_gives_back(
    tmp_path: Path, host: VmHost, plain: Plain, uplink: str
) -> None:
    laid_out = host_view(host)
    stack = bridged_stack(tmp_path, host, f"up{uplink.replace('.', '')}", uplink)
    try:
        operator = open_client(host.address, host.port, host.user, host.private_key,
                               host.known_hosts)  # fmt: skip
        try:  # a session over the very link that is about to be bridged
            stack.up()
            status, out = run_command(operator, f"ip -o addr show dev {BRIDGE}")
            assert status == 0 and plain.address in out, out  # it survived the takeover
        finally:
            operator.close()
        # A new login: the uplink is the bridge's port, the bridge holds address and routes.
        assert f"master {BRIDGE} " in sh(host, f"ip -o link show dev {uplink}")
        assert plain.address not in sh(host, f"ip -o addr show dev {uplink}")
        routes = sh(host, f"ip -4 route show dev {BRIDGE}")
        assert f"default via {plain.gateway}" in routes, routes
        stack.preview_no_changes()
        stack.destroy()
        assert diff_snapshots(laid_out, host_view(host)) == []
    finally:
        stack.remove()


def wrong_address_is_rolled_back(tmp_path: Path, host: VmHost, plain: Plain, uplink: str) -> None:
    laid_out = host_view(host)
    stack = bridged_stack(
        tmp_path, host, f"wrong{uplink.replace('.', '')}", uplink,
        bridge_addresses_override=[wrong_address(plain)],
    )  # fmt: skip
    try:
        text, took = failed_up(stack)
        assert "cut the host off" in text and "rolled back: ok" in text, text
        print(f"\n{uplink}: the wrong address was rolled back; `up` failed after {took:.0f}s")
        assert diff_snapshots(laid_out, host_view(host)) == []  # routes exactly as before
        assert not stack.resources("UplinkBridge")
    finally:
        stack.remove()


def test_bond_uplink(tmp_path: Path, vm_host: VmHost, plain: Plain) -> None:
    """eth0 enslaved to bond0, which holds the host's address: the bridge takes bond0."""
    with laid(vm_host, plain, bond_script(plain), BOND):
        assert "Slave Interface: eth0" in sh(vm_host, f"cat /proc/net/bonding/{BOND}")
        takeover_keeps_ssh_and_destroy_gives_back(tmp_path, vm_host, plain, BOND)
        wrong_address_is_rolled_back(tmp_path, vm_host, plain, BOND)
