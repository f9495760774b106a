"""DHCP and DNS on a NAT network end to end: the real engine, a lab host, real guests running
busybox udhcpc, dnsmasq on the bridge."""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.console import GuestConsole
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
from kvmnet_lab.testing.stack import TestStack, config_stack

pytestmark = pytest.mark.e2e

# Two declared guests with static leases, and a stray guest on the same bridge whose MAC no
# one declared: it must get an address from the dynamic range.
WITH_STRAY = textwrap.dedent(
    """
    import pulumi
    from kvmnet_provider.models import GuestSpec, NatNetwork, NetworkArgs
    from kvmnet_provider.program import connection_from_config, guest_image
    from kvmnet_provider.resources import (GuestNicArgs, QemuGuest, QemuGuestArgs, TapPort,
                                           TapPortArgs)

    cfg = pulumi.Config("kvmnet")
    conn = connection_from_config(cfg)
    kernel, initrd = guest_image(cfg)

    def cmdline(name):
        return f"console=ttyS0 quiet kvmnet.name={name} kvmnet.ip=dhcp"

    guests = [
        GuestSpec(name=n, tap=f"vif{i}.0", mac=f"52:54:00:00:01:0{i}", address=a,
                  kernel=kernel, initrd=initrd, cmdline=cmdline(n), stop_timeout=2)
        for i, (n, a) in enumerate(
            (("g1", "10.0.1.11"), ("g2", cfg.get("g2Address") or "10.0.1.12")), start=1)
    ]
    net = NatNetwork("net", NetworkArgs(connection=conn, gateway="10.0.1.254", guests=guests,
                                        domain=cfg.get("domain") or "lab.test",
                                        accelerator="tcg"))
    tap = TapPort("stray-tap", TapPortArgs(connection=conn, name="vif9.0", bridge=net.bridge),
                  pulumi.ResourceOptions(depends_on=[net.dhcp]))
    stray = QemuGuest("stray", QemuGuestArgs(
        connection=conn, name="stray", kernel=kernel, initrd=initrd, cmdline=cmdline("stray"),
        nics=[GuestNicArgs(tap=tap, mac="52:54:00:00:09:09")], accelerator="tcg",
        stop_timeout=2))
    pulumi.export("consoles", {n: g.console_socket for n, g in net.guests.items()})
    pulumi.export("stray", stray.console_socket)
    pulumi.export("dhcp_pid", net.dhcp.pid)
    """
)


@pytest.fixture()
def dhcp_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    config = lab_stack_config(lab, image_dir=guest_image_dir())
    with config_stack(tmp_path, "dhcp", {**config, "kvmnet:accelerator": "tcg"}) as stack:
        yield stack


def dhcp_state(stack: TestStack) -> dict[str, Any]:
    (server,) = stack.resources("DhcpServer")
    outputs: dict[str, Any] = server["outputs"]
    return outputs


def eth0_address(console: GuestConsole) -> str:
    out = console.run("ip -4 -o addr show dev eth0", 20).output
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/(\d+)", out)
    assert found, out
    return found.group(1)


def uids(pid: int) -> set[int]:
    """The real, effective, saved and filesystem uids of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return {int(field) for field in line.split()[1:]}


def resolves(console: GuestConsole, name: str) -> list[str]:
    """What the guest's resolver (the lease's DNS server) answers for `name`."""
    out = console.run(f"nslookup {name}", 30).output
    answer = out.split(name, 1)[-1] if name in out else ""
    return re.findall(r"Address(?: \d+)?:\s*(\d+\.\d+\.\d+\.\d+)", answer)


def test_dhcp_leases_dns_and_dnsmasq_drift(
    dhcp_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host_ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, host_ns)
    dhcp_stack.set_program(WITH_STRAY)
    dhcp_stack.up()
    outs = dhcp_stack.outputs()
    with (
        GuestConsole(outs["consoles"]["g1"]) as g1,
        GuestConsole(outs["consoles"]["g2"]) as g2,
        GuestConsole(outs["stray"]) as stray,
    ):
        for console in (g1, g2, stray):
            console.wait_ready(120)
        # Each declared guest got its reserved address, the default route and the DNS server
        # from its lease (udhcpc), nothing from the kernel command line.
        assert eth0_address(g1) == "10.0.1.11"
        assert eth0_address(g2) == "10.0.1.12"
        assert "default via 10.0.1.254" in g1.run("ip route", 20).output
        resolv = g1.run("cat /etc/resolv.conf", 20).output
        assert "nameserver 10.0.1.254" in resolv and "search lab.test" in resolv, resolv
        # The other guest by name, through the bridge's address.
        assert resolves(g1, "g2.lab.test") == ["10.0.1.12"]
        assert resolves(g2, "g1.lab.test") == ["10.0.1.11"]
        # The undeclared MAC: an address from the default range (the upper half).
        stray_address = ipaddress.IPv4Address(eth0_address(stray))
        low, high = ipaddress.IPv4Address("10.0.1.128"), ipaddress.IPv4Address("10.0.1.253")
        assert low <= stray_address <= high, stray_address
        assert "default via 10.0.1.254" in stray.run("ip route", 20).output

        # Nothing that parses the guests' packets or runs their code is root: dnsmasq runs as
        # its own user (and wrote the leases below after dropping root), each QEMU as a user of
        # its guest's own.
        dnsmasq = {pwd.getpwnam("dnsmasq").pw_uid}
        assert uids(int(outs["dhcp_pid"])) == dnsmasq
        qemus = [uids(r["outputs"]["pid"]) for r in dhcp_stack.resources("QemuGuest")]
        assert all(len(u) == 1 and 0 not in u for u in qemus) and len(set(map(min, qemus))) == 3
        guest_users = [pwd.getpwuid(min(u)).pw_name for u in qemus]
        assert all(name.startswith("kvmnet-") for name in guest_users), guest_users

        # read reports the live leases.
        dhcp_stack.refresh()
        state = dhcp_state(dhcp_stack)
        leases = {lease["mac"]: lease for lease in state["leases"]}
        assert leases["52:54:00:00:01:01"]["address"] == "10.0.1.11"
        assert leases["52:54:00:00:01:02"]["address"] == "10.0.1.12"
        assert leases["52:54:00:00:09:09"]["address"] == str(stray_address)
        assert state["serving"] is True and state["problems"] == []
        dhcp_stack.preview_no_changes()

        # dnsmasq killed behind kvmnet's back: refresh reports it, up restarts it, and the
        # leases are still there (the lease file stays).
        pid = int(outs["dhcp_pid"])
        os.kill(pid, signal.SIGKILL)
        refresh = dhcp_stack.refresh()
        assert "updated" in refresh.stdout or "~ " in refresh.stdout, refresh.stdout
        drift = dhcp_state(dhcp_stack)
        assert drift["serving"] is False and "dnsmasq is not running" in drift["problems"]
        dhcp_stack.up()
        state = dhcp_state(dhcp_stack)
        assert state["serving"] is True and state["pid"] != pid
        assert uids(state["pid"]) == dnsmasq
        kept = {lease["mac"]: lease["address"] for lease in state["leases"]}
        assert kept["52:54:00:00:01:01"] == "10.0.1.11", kept
        assert kept["52:54:00:00:09:09"] == str(stray_address), kept
        # The restarted server answers again.
        assert resolves(g1, "g2.lab.test") == ["10.0.1.12"]
        dhcp_stack.preview_no_changes()

        # Changing a guest's reservation touches only the hosts files: a SIGHUP, same
        # dnsmasq, the new name at once, no guest replaced and every lease kept.
        guest_pids = {r["outputs"]["name"]: r["outputs"]["pid"]
                      for r in dhcp_stack.resources("QemuGuest")}  # fmt: skip
        pid = state["pid"]
        dhcp_stack.config("kvmnet:g2Address", "10.0.1.22")
        dhcp_stack.up()
        state = dhcp_state(dhcp_stack)
        assert state["pid"] == pid and state["serving"] is True
        assert resolves(g1, "g2.lab.test") == ["10.0.1.22"]
        # Changing the domain needs a restart: a new dnsmasq, with the leases kept.
        dhcp_stack.config("kvmnet:domain", "other.test")
        dhcp_stack.up()
        state = dhcp_state(dhcp_stack)
        assert state["pid"] != pid and state["serving"] is True
        kept = {lease["mac"]: lease["address"] for lease in state["leases"]}
        assert kept["52:54:00:00:01:01"] == "10.0.1.11", kept
        assert kept["52:54:00:00:09:09"] == str(stray_address), kept
        assert resolves(g1, "g1.other.test") == ["10.0.1.11"]
        assert {r["outputs"]["name"]: r["outputs"]["pid"]
                for r in dhcp_stack.resources("QemuGuest")} == guest_pids  # fmt: skip
        dhcp_stack.preview_no_changes()

    dhcp_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, host_ns)) == []
    for name in guest_users:  # the snapshot's "users" too: none left for this lab host
        with pytest.raises(KeyError):
            pwd.getpwnam(name)


BAD_INPUT = [
    # (guests, other config, the property the error names)
    (
        [
            {"name": "g1", "address": "10.0.1.11", "mac": "52:54:00:00:01:01"},
            {"name": "g2", "address": "10.0.1.12", "mac": "52:54:00:00:01:01"},
        ],
        {},
        "kvmnet:guests[1].mac",
    ),
    ([{"name": "g1", "address": "10.0.1.200"}], {}, "kvmnet:guests[0].address"),
    ([{"name": "g1", "address": "10.0.2.5"}], {}, "kvmnet:guests[0].address"),
    ([{"name": "g1", "address": "10.0.1.11"}], {"kvmnet:domain": "bad_domain!"}, "kvmnet:domain"),
    (
        [{"name": "g1", "address": "10.0.1.11"}],
        {"kvmnet:dhcpRange": ["10.0.1.100", "10.0.2.10"]},
        "kvmnet:dhcpRange",
    ),
]


def test_bad_dhcp_input_fails_at_preview(
    dhcp_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host_ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, host_ns)
    for guests, extra, prop in BAD_INPUT:
        for key in ("kvmnet:domain", "kvmnet:dhcpRange"):
            dhcp_stack.pulumi("config", "rm", key, check=False)
        dhcp_stack.config_values({"kvmnet:guests": guests, **extra})
        preview = dhcp_stack.preview(check=False)
        said = preview.stdout + preview.stderr
        assert preview.returncode != 0, said
        assert prop in said, (prop, said)
        assert "Traceback" not in said, said
    assert diff_snapshots(before, host_snapshot(lab_api, host_ns)) == []


# --- a host whose INPUT policy is DROP, in both firewall backends ---------------------------------
LEGACY, NFT = "iptables-legacy", "iptables-nft"


def input_drop_host(lab_api: Lab, ns: str, tool: str, ssh_port: int) -> None:
    """INPUT policy DROP, letting in only SSH (the lab's way in) and replies."""
    for args in (
        ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
        ["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-A", "INPUT", "-p", "tcp", "--dport", str(ssh_port), "-j", "ACCEPT"],
        ["-P", "INPUT", "DROP"],
    ):
        run_in(lab_api, ns, [tool, *args])


def nft_rules(lab_api: Lab, ns: str) -> str:
    """`nft list ruleset` without its counters (volatile)."""
    out = run_in(lab_api, ns, ["nft", "list", "ruleset"])
    return re.sub(r"counter packets \d+ bytes \d+", "counter", out)


def undo_input_drop(lab_api: Lab, ns: str, tool: str) -> None:
    for args in (["-P", "INPUT", "ACCEPT"], ["-F", "INPUT"]):
        run_in(lab_api, ns, [tool, *args], check=False)
    if tool == NFT:
        run_in(lab_api, ns, ["nft", "delete", "table", "ip", "filter"], check=False)


@pytest.mark.parametrize("tool", [LEGACY, NFT])
def test_dhcp_and_dns_on_an_input_drop_host(
    tool: str, dhcp_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    host = lab.hosts[0]
    ns = host.namespace
    input_drop_host(lab_api, ns, tool, host.port)
    try:
        before = host_snapshot(lab_api, ns)
        nft_before = nft_rules(lab_api, ns)
        dhcp_stack.config("kvmnet:model", "nat")
        dhcp_stack.up()
        (server,) = dhcp_stack.resources("DhcpServer")
        assert server["outputs"]["backend"] == ("iptables" if tool == LEGACY else "nftables")
        save = run_in(lab_api, ns, [tool + "-save", "-t", "filter"])
        first = next(line for line in save.splitlines() if line.startswith("-A INPUT "))
        assert first == "-A INPUT -m comment --comment kvmnet -j KVMNET_INP", save
        guests = dhcp_stack.outputs()["guests"]
        with (
            GuestConsole(guests["g1"]["console"]) as g1,
            GuestConsole(guests["g2"]["console"]) as g2,
        ):
            g1.wait_ready(120)
            g2.wait_ready(120)
            assert eth0_address(g1) == "10.0.1.11"
            assert resolves(g1, "g2.kvm.internal") == ["10.0.1.12"]
            assert resolves(g2, "g1.kvm.internal") == ["10.0.1.11"]
        dhcp_stack.preview_no_changes()

        # A foreign DROP above kvmnet's jump: refresh reports it, up refuses naming the rule,
        # and once the operator removes it, up converges.
        drop = ["-i", "br-in", "-j", "DROP"]
        run_in(lab_api, ns, [tool, "-I", "INPUT", "1", *drop])
        try:
            dhcp_stack.refresh()
            (server,) = dhcp_stack.resources("DhcpServer")
            problems = server["outputs"]["problems"]
            assert server["outputs"]["serving"] is False, problems
            assert any("blocked by" in p and "-i br-in -j DROP" in p for p in problems), problems
            refused = dhcp_stack.up(check=False)
            said = refused.stdout + refused.stderr
            assert refused.returncode != 0 and "-i br-in -j DROP" in said, said
            assert "Traceback" not in said, said
        finally:
            run_in(lab_api, ns, [tool, "-D", "INPUT", *drop])
        dhcp_stack.up()
        dhcp_stack.preview_no_changes()
        dhcp_stack.destroy()
        assert diff_snapshots(before, host_snapshot(lab_api, ns)) == []
        assert nft_rules(lab_api, ns) == nft_before
    finally:
        undo_input_drop(lab_api, ns, tool)


TWO_SERVERS = textwrap.dedent(
    """
    from kvmnet_provider.program import connection_from_config
    from kvmnet_provider.resources import Bridge, BridgeArgs
    from kvmnet_provider.resources.dhcp import DhcpHost, DhcpServer, DhcpServerArgs

    import pulumi

    conn = connection_from_config(pulumi.Config("kvmnet"))
    for i in (1, 2):
        bridge = Bridge(f"br{i}", BridgeArgs(connection=conn, name=f"br-d{i}",
                                             addresses=[f"10.0.{i}.254/24"]))
        DhcpServer(f"dhcp{i}", DhcpServerArgs(
            connection=conn, bridge=bridge.name, subnet=f"10.0.{i}.0/24",
            gateway=f"10.0.{i}.254",
            hosts=[DhcpHost("g1", f"52:54:00:00:0{i}:01", f"10.0.{i}.11")]))
    """
)


def test_two_servers_on_one_host_and_destroy_leaves_nothing(
    dhcp_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, ns)
    dhcp_stack.set_program(TWO_SERVERS)
    dhcp_stack.up()
    servers = dhcp_stack.resources("DhcpServer")
    assert len(servers) == 2 and all(s["outputs"]["serving"] for s in servers)
    dnsmasqs = [p for p in host_snapshot(lab_api, ns)["processes"] if "dnsmasq" in p[0]]
    assert len(dnsmasqs) == 2, dnsmasqs
    # As its user, dnsmasq reads its hosts files and can write in none of kvmnet's directories.
    user = pwd.getpwnam("dnsmasq")
    as_dnsmasq = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    inode = run_in(lab_api, ns, ["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).strip()
    for server in servers:
        out = server["outputs"]
        assert uids(out["pid"]) == {user.pw_uid}
        files = Path(f"/run/kvmnet-dnsmasq/netns-{inode}/{out['bridge']}")
        said = run_in(lab_api, ns, [*as_dnsmasq, "cat", str(files / "dhcp-hosts")])
        assert said.startswith("52:54:00:00:0"), said
        for directory in (Path(out["run_dir"]), files):
            probe = run_in(lab_api, ns, [*as_dnsmasq, "touch", str(directory / "probe")], False)
            assert not (directory / "probe").exists(), probe
    dhcp_stack.refresh()
    dhcp_stack.preview_no_changes()
    dhcp_stack.destroy()
    assert diff_snapshots(before, host_snapshot(lab_api, ns)) == []
