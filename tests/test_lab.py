"""The lab: namespaces as remote KVM hosts, each with its own sshd (root: every test but the
naming one is e2e)."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from kvmnet_lab.lab import (
    Lab,
    LabNames,
    LabStatus,
    SubnetConflict,
    connect_host,
    open_client,
    run_command,
    subnet_octet,
)
from kvmnet_lab.lab import netns as nsmod

PRIVATE = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def _used_octets() -> set[int]:
    used = set()
    for _if, addr, _plen in nsmod.root_addresses():
        a = ipaddress.IPv4Address(addr)
        if a in ipaddress.IPv4Network("198.18.0.0/16"):
            used.add(int(str(a).split(".")[2]))
    return used


def free_name(prefix: str = "ku") -> str:
    """A random lab name whose /24 is not in use in the root namespace."""
    used = _used_octets()
    for _ in range(100):
        name = prefix + secrets.token_hex(3)
        if subnet_octet(name) not in used:
            return name
    raise RuntimeError("no free lab name")


@pytest.fixture
def scratch_lab(tmp_path: Path) -> Iterator[Lab]:
    """A separate lab for up/down tests (never the session fixture's); always taken down."""
    lab = Lab(free_name(), tmp_path / "state")
    try:
        yield lab
    finally:
        lab.down()


def _pids_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if nsmod.pid_alive(p)]


def _assert_gone(lab: Lab, pids: list[int]) -> None:
    assert not [ns for ns in nsmod.list_namespaces() if ns.startswith(lab.names.prefix)]
    assert not nsmod.link_exists(lab.names.root_veth)
    assert _pids_alive(pids) == []
    assert not (lab.state_dir / "state.json").exists()


# --- naming ---------------------------------------------------------------------------
def test_names_are_short_and_deterministic() -> None:
    n = LabNames.for_name("abcdefghijkl")  # longest allowed name
    assert len(n.root_veth) <= 15
    assert 1 <= n.octet <= 250
    assert n.octet == subnet_octet("abcdefghijkl")
    assert n.owns_namespace("abcdefghijkl-h12") and n.owns_namespace("abcdefghijkl-sw")
    assert not n.owns_namespace("abcdefghijkl-x") and not n.owns_namespace("abcdefghijklm-sw")
    with pytest.raises(ValueError):
        LabNames.for_name("has-hyphen")


# --- the shared lab -------------------------------------------------------------------
@pytest.mark.e2e
def test_status_lists_reachable_hosts(lab: LabStatus) -> None:
    assert [h.name for h in lab.hosts] == ["h1", "h2"]
    octet = lab.lan.split(".")[2]
    assert lab.lan == f"198.18.{octet}.0/24"
    assert lab.gateway == f"198.18.{octet}.254"
    assert lab.operator_address == f"198.18.{octet}.1"
    assert [h.address for h in lab.hosts] == [f"198.18.{octet}.11", f"198.18.{octet}.12"]
    assert all(h.ssh_reachable and h.port == 22 and h.user == "root" for h in lab.hosts)
    assert oct(os.stat(lab.hosts[0].private_key).st_mode & 0o777) == "0o600"
    assert lab.ext.address == f"198.18.{octet}.100" and lab.ext.echo_port == 7777


@pytest.mark.e2e
def test_ssh_session_lives_in_host_namespace(lab: LabStatus) -> None:
    for host in lab.hosts:
        client = connect_host(host)  # RejectPolicy + the lab's known_hosts
        try:
            rc, out = run_command(client, "ip -j addr show dev eth0")
        finally:
            client.close()
        assert rc == 0
        addrs = [a["local"] for link in json.loads(out) for a in link["addr_info"]]
        assert host.address in addrs


@pytest.mark.e2e
def test_unknown_host_key_is_refused(lab: LabStatus, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    h = lab.hosts[0]
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        open_client(h.address, h.port, h.user, h.private_key, str(empty)).close()


@pytest.mark.e2e
def test_changed_host_key_is_refused(lab: LabStatus, tmp_path: Path) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(lab.hosts[1].private_key)  # not a host key
    h = lab.hosts[0]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{h.address} {other.get_name()} {other.get_base64()}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        open_client(h.address, h.port, h.user, h.private_key, str(kh)).close()


@pytest.mark.e2e
def test_echo_reports_peer_address(lab: LabStatus) -> None:
    with socket.create_connection((lab.ext.address, lab.ext.echo_port), timeout=5) as s:
        local_port = s.getsockname()[1]
        reply = s.makefile().readline()
    assert reply == f"peer {lab.operator_address} {local_port}\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(b"hi", (lab.ext.address, lab.ext.echo_port))
        data, _ = u.recvfrom(200)
        assert data.decode() == f"peer {lab.operator_address} {u.getsockname()[1]}\n"
    log = Path(lab.ext.echo_log).read_text().splitlines()
    assert reply.strip() in log and data.decode().strip() in log


@pytest.mark.e2e
def test_topology(lab: LabStatus, lab_api: Lab) -> None:
    ext_routes = json.loads(nsmod.ip("-j", "-4", "route", "show", ns=lab.ext.namespace))
    for r in ext_routes:
        if r["dst"] != "default":
            net = ipaddress.IPv4Network(r["dst"])
            assert not any(net.overlaps(p) for p in PRIVATE), r
    fwd = lab_api.exec_in("sw", ["sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True)
    assert fwd.stdout.strip() == b"0"
    h1 = lab_api.exec_in("h1", ["ip", "-j", "route", "show", "default"], capture_output=True)
    assert json.loads(h1.stdout)[0]["gateway"] == lab.gateway
    # the root namespace has exactly the connected route of the operator veth for the LAN
    root = [r for r in nsmod.ip_json("-4", "route", "show") if r.get("dst") == lab.lan]
    assert [r["dev"] for r in root] == [lab_api.names.root_veth]
    with pytest.raises(Exception, match="not a namespace"):
        lab_api.exec_in("h1-other", ["true"])


@pytest.mark.e2e
def test_cli_status_json(lab: LabStatus) -> None:
    argv = [sys.executable, "-m", "kvmnet_lab.cli", "--name", lab.name,
            "--state-dir", lab.state_dir, "lab", "status", "--json"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    data = json.loads(out)
    assert LabStatus.from_dict(data) == lab
    table = subprocess.run(argv[:-1], capture_output=True, text=True, timeout=60).stdout
    assert "h1" in table and "yes" in table


@pytest.mark.e2e
def test_subnet_conflict_is_refused(lab: LabStatus, tmp_path: Path) -> None:
    octet = int(lab.lan.split(".")[2])
    name = next(f"kc{i}" for i in range(100000) if subnet_octet(f"kc{i}") == octet)
    other = Lab(name, tmp_path / "state")
    try:
        with pytest.raises(SubnetConflict):
            other.up(hosts=1)
        assert not other.existing_namespaces()
    finally:
        other.down()
    assert lab_still_fine(lab)


def lab_still_fine(lab: LabStatus) -> bool:
    return all(h.ssh_reachable for h in Lab(lab.name, lab.state_dir).status().hosts)


# --- up / down on a scratch lab -------------------------------------------------------
@pytest.mark.e2e
def test_up_is_idempotent_and_down_cleans(scratch_lab: Lab) -> None:
    first = scratch_lab.up(hosts=2)
    pids1 = scratch_lab.recorded_pids()
    key1 = Path(first.hosts[0].private_key).read_bytes()
    kh1 = Path(first.hosts[0].known_hosts).read_text()
    second = scratch_lab.up(hosts=2)
    assert second == first
    assert scratch_lab.recorded_pids() == pids1
    assert Path(second.hosts[0].private_key).read_bytes() == key1
    assert Path(second.hosts[0].known_hosts).read_text() == kh1
    assert sorted(scratch_lab.existing_namespaces()) == sorted(
        f"{scratch_lab.name}-{r}" for r in ("sw", "ext", "h1", "h2")
    )
    # shrinking removes the extra host
    third = scratch_lab.up(hosts=1)
    assert [h.name for h in third.hosts] == ["h1"] and third.hosts[0].ssh_reachable
    assert f"{scratch_lab.name}-h2" not in scratch_lab.existing_namespaces()
    assert not nsmod.pid_alive(pids1["h2"])
    pids = list(scratch_lab.recorded_pids().values())
    scratch_lab.down()
    _assert_gone(scratch_lab, pids)
    scratch_lab.down()  # and again, on an absent lab


@pytest.mark.e2e
def test_down_removes_what_the_agent_kept_for_its_hosts(scratch_lab: Lab) -> None:
    """A host's agent books (/run/kvmnet/netns-<inode>) and guests' overlays and seeds
    (/var/lib/kvmnet/netns-<inode>) go with it, also when hosts are dropped by a smaller up;
    the kernel may give a later namespace the same inode."""
    from kvmnet_provider.agent import hoststate
    from kvmnet_provider.agent.guests import disks

    scratch_lab.up(hosts=2)
    kept: dict[str, list[Path]] = {}
    for role in ("h1", "h2"):
        inode = os.stat(f"/run/netns/{scratch_lab.name}-{role}").st_ino
        kept[role] = [root / f"netns-{inode}" for root in (hoststate.ROOT, disks.ROOT)]
        for d in kept[role]:  # as a guest left running at down leaves them
            (d / "guests" / "g1").mkdir(parents=True)
            (d / "guests" / "g1" / "disk.qcow2").write_bytes(b"overlay")
    scratch_lab.up(hosts=1)
    assert not any(d.exists() for d in kept["h2"])
    assert all(d.exists() for d in kept["h1"])
    scratch_lab.down()
    assert not any(d.exists() for d in kept["h1"])


@pytest.mark.e2e
def test_down_when_a_namespace_was_deleted_by_hand(scratch_lab: Lab) -> None:
    scratch_lab.up(hosts=2)
    pids = list(scratch_lab.recorded_pids().values())
    # a guest-like process inside a host namespace must be killed too
    sleeper = subprocess.Popen(nsmod.exec_argv(f"{scratch_lab.name}-h2", ["sleep", "300"]))
    nsmod.run(["ip", "netns", "delete", f"{scratch_lab.name}-h1"])  # sshd keeps running
    assert nsmod.pid_alive(scratch_lab.recorded_pids()["h1"])
    scratch_lab.down()
    sleeper.wait(timeout=10)
    _assert_gone(scratch_lab, [*pids, sleeper.pid])


@pytest.mark.e2e
def test_down_when_a_process_was_killed(scratch_lab: Lab) -> None:
    scratch_lab.up(hosts=1)
    pids = scratch_lab.recorded_pids()
    os.kill(pids["ext-echo"], 9)
    deadline = time.monotonic() + 10  # down must meet it dead, not dying
    while _pids_alive([pids["ext-echo"]]):
        assert time.monotonic() < deadline, "the killed echo server did not die"
        time.sleep(0.02)
    scratch_lab.down()
    _assert_gone(scratch_lab, list(pids.values()))


@pytest.mark.e2e
def test_down_cleans_a_crashed_up_without_state(scratch_lab: Lab) -> None:
    n = scratch_lab.names
    for ns in (n.switch_ns, n.host_ns(1)):
        nsmod.run(["ip", "netns", "add", ns])
    nsmod.ensure_veth(n.root_veth, None, n.switch_op_port, n.switch_ns)
    sleeper = subprocess.Popen(nsmod.exec_argv(n.host_ns(1), ["sleep", "300"]))
    assert not (scratch_lab.state_dir / "state.json").exists()
    scratch_lab.down()
    sleeper.wait(timeout=10)
    _assert_gone(scratch_lab, [sleeper.pid])


@pytest.mark.e2e
def test_down_after_up_was_killed_midway(scratch_lab: Lab) -> None:
    argv = [sys.executable, "-m", "kvmnet_lab.cli", "--name", scratch_lab.name,
            "--state-dir", str(scratch_lab.state_dir), "lab", "up", "--hosts", "3"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not scratch_lab.existing_namespaces() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=10)
    pids = list(scratch_lab.recorded_pids().values())
    scratch_lab.down()
    _assert_gone(scratch_lab, pids)


@pytest.mark.e2e
def test_down_on_absent_lab(tmp_path: Path) -> None:
    lab = Lab(free_name(), tmp_path / "none")
    lab.down()
    assert not (tmp_path / "none").exists()


@pytest.mark.e2e
def test_reboot_host_rebuilds_it_with_its_address_mac_key_and_stale_records(
    scratch_lab: Lab,
) -> None:
    from kvmnet_lab.lab.faults import reboot_host

    from kvmnet_provider.agent import hoststate

    host = scratch_lab.up(hosts=1).hosts[0]
    ns = host.namespace
    inode = os.stat(f"/run/netns/{ns}").st_ino
    (nic,) = nsmod.ip_json("link", "show", "dev", "eth0", ns=ns)
    books = hoststate.ROOT / f"netns-{inode}"
    books.mkdir(mode=0o700, parents=True, exist_ok=True)
    (books / "forwarding.json").write_text('{"stale": true}')
    nsmod.ip("link", "add", "kvtdummy0", "type", "bridge", ns=ns)
    nsmod.set_sysctl(ns, "net.ipv4.ip_forward", "1")
    sleeper = subprocess.Popen(nsmod.exec_argv(ns, ["sleep", "300"]))

    reboot_host(scratch_lab, "h1")
    sleeper.wait(timeout=10)  # ended: killed with its namespace (a timeout fails the test)
    assert not nsmod.link_exists("kvtdummy0", ns=ns)
    assert nsmod.run(nsmod.exec_argv(ns, ["sysctl", "-n", "net.ipv4.ip_forward"])).strip() == "0"
    assert nsmod.ip_json("link", "show", "dev", "eth0", ns=ns)[0]["address"] == nic["address"]
    assert scratch_lab.status().hosts[0].ssh_reachable  # same address, same host key
    moved = hoststate.ROOT / f"netns-{os.stat(f'/run/netns/{ns}').st_ino}"
    assert (moved / "forwarding.json").read_text() == '{"stale": true}'  # records stay
    assert moved == books or not books.exists()
