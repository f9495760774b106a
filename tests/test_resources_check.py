"""Bad input fails at `pulumi preview`, naming the property, and never touches the host.

One stack is reused: each case swaps the program (or a config value) and previews. `check`
runs at preview, so no host is contacted for invalid inputs; the host snapshot proves it.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kvmnet_lab.lab import HostStatus, Lab, LabStatus
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack

pytestmark = pytest.mark.e2e

VENV_PY = sys.executable

HEAD = """
import pulumi
from pulumi.dynamic import Resource
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.models import GuestSpec, NatNetwork, NetworkArgs, PortForwardSpec
from kvmnet_provider.resources import *
from kvmnet_provider.resources.links import BridgeProvider
from kvmnet_provider.resources.netfilter import ForwardingSettingProvider

cfg = pulumi.Config()
H = dict(host={address!r}, known_hosts={known_hosts!r}, private_key_path={key!r},
         python={python!r})
c = HostSettings(**H)


class RawBridge(Resource, module="kvmnet", name="Bridge"):
    '''The real provider fed raw properties, as another language's SDK could send them.'''

    def __init__(self, name, props):
        base = dict(connection=dict(H), owner="kvt/dev/Bridge/" + name, name="br-raw",
                    addresses=[], mtu=None, stp=False, forward_delay=0, up=True, adopt=False,
                    ifindex=None, mac=None)
        base.update(props)
        super().__init__(BridgeProvider(), name, base)


def G(name, address=None, mac=None, tap=None):  # g<N> on vif<N>.0, MAC 52:54:00:00:01:0<N>
    n = int(name[1:])
    return GuestSpec(name=name, tap=tap or f"vif{{n}}.0", mac=mac or f"52:54:00:00:01:0{{n}}",
                     address=address, kernel="/img/vmlinuz", initrd="/img/initrd.img")


def nat(*guests, **kw):
    return NatNetwork("n", NetworkArgs(connection=c, gateway="10.0.1.254", guests=list(guests),
                                       **kw))


class RawForwarding(Resource, module="kvmnet", name="ForwardingSetting"):
    def __init__(self, name, props):
        base = dict(connection=dict(H), owner="kvt/dev/ForwardingSetting/" + name, ipv4=True,
                    ipv6=False, previous=None, holders=None)
        base.update(props)
        super().__init__(ForwardingSettingProvider(), name, base)
"""


@dataclass(frozen=True)
class Case:
    id: str
    body: str
    expect: tuple[str, ...]  # all must appear in the preview's output
    config: tuple[tuple[str, str], ...] = ()


def bridge(**kw: Any) -> str:
    args = {"name": "br-ok", **kw}
    return (
        f"Bridge('b', BridgeArgs(connection=c, {', '.join(f'{k}={v!r}' for k, v in args.items())}))"
    )


def guest(**kw: Any) -> str:
    args = {"name": "q1", "kernel": "/img/vmlinuz", **kw}
    listed = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return f"QemuGuest('q', QemuGuestArgs(connection=c, {listed}))"


def conn(**kw: Any) -> str:
    extra = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    settings = f"HostSettings(**{{**H, **dict({extra})}})"
    return f"Bridge('b', BridgeArgs(connection={settings}, name='br-ok'))"


CASES = [
    Case("name-too-long", bridge(name="br-0123456789abc"), ("name", "1-15 characters")),
    Case("name-space", bridge(name="br in"), ("name", "'br in'")),
    Case("name-slash", bridge(name="br/x"), ("name", "'br/x'")),
    Case("name-from-config", "Bridge('b', BridgeArgs(connection=c, name=cfg.require('brname')))",
         ("name", "'vif-from-config-x'"), config=(("brname", "vif-from-config-x"),)),
    Case("address-garbage", bridge(addresses=["10.0.1.999/24"]), ("addresses", "not a valid")),
    Case("address-no-prefix", bridge(addresses=["10.0.1.254"]), ("addresses", "with a prefix")),
    Case("address-is-network", bridge(addresses=["10.0.1.0/24"]), ("addresses", "network address")),
    Case("mtu-10", bridge(mtu=10), ("mtu", "between 68 and 65535")),
    Case("tap-mtu-70000",
         bridge() + "\nTapPort('t', TapPortArgs(connection=c, name='vif1.0', bridge='br-ok', "
         "mtu=70000))",
         ("mtu", "70000")),
    Case("forward-delay-with-stp", bridge(stp=True, forward_delay=1), ("forward_delay", "stp")),
    Case("forward-delay-31", bridge(forward_delay=31), ("forward_delay", "between 0 and 30")),
    Case("masq-host-bits",
         "MasqueradeRule('m', MasqueradeRuleArgs(connection=c, source='10.0.1.5/24'))",
         ("source", "host bits set", "10.0.1.0/24")),
    Case("masq-ipv6",
         "MasqueradeRule('m', MasqueradeRuleArgs(connection=c, source='fd00::/64'))",
         ("source", "IPv4")),
    Case("masq-out-interface",
         "MasqueradeRule('m', MasqueradeRuleArgs(connection=c, source='10.0.1.0/24', "
         "out_interface='eth0 x'))",
         ("out_interface", "interface name")),
    Case("tap-owner-user",
         bridge() + "\nTapPort('t', TapPortArgs(connection=c, name='vif1.0', bridge='br-ok', "
         "owner_user='Bad User'))",
         ("owner_user", "POSIX user name")),
    Case("tap-undeclared-bridge",
         "TapPort('t', TapPortArgs(connection=c, name='vif1.0', bridge='br-nope'))",
         ("bridge", "no Bridge named 'br-nope' is declared")),
    Case("port-0", conn(port=0), ("connection.port", "1-65535")),
    Case("bad-user", conn(user="Root!"), ("connection.user", "'Root!'")),
    Case("bad-host", conn(host="bad host!"), ("connection.host", "'bad host!'")),
    Case("python-relative-with-spaces", conn(python="bin/my python"), ("connection.python",)),
    Case("bad-host-key", conn(host_key="ssh-ed25519 not-a-key"), ("connection.host_key",)),
    Case("known-hosts-relative", conn(known_hosts="known_hosts"), ("connection.known_hosts",)),
    Case("connect-timeout-0", conn(connect_timeout=0), ("connection.connect_timeout",)),
    Case("insecure-and-host-key",
         conn(insecure_accept_any_host_key=True, known_hosts=None,
              host_key="ssh-ed25519 " + "A" * 68),
         ("connection.insecure_accept_any_host_key", "cannot be combined")),
    Case("unknown-connection-setting",
         "RawBridge('b', {'connection': {**H, 'colour': 'blue'}})",
         ("connection.colour", "unknown setting")),
    Case("raw-stp-not-bool", "RawBridge('b', {'stp': 'yes'})", ("stp", "true or false")),
    Case("forwarding-ipv4-off", "RawForwarding('f', {'ipv4': False})", ("ipv4", "must be true")),
    # QEMU guests, declared directly
    Case("guest-memory-1", guest(memory_mib=1), ("memory_mib", "between 64 and 1048576")),
    Case("guest-cmdline-newline", guest(cmdline="quiet\ninit=/bin/sh"),
         ("cmdline", "printable ASCII on one line")),
    Case("guest-console-socket-of-a-service",
         guest(console_socket="/run/dbus/system_bus_socket"),
         ("console_socket", "outside the guest's run directory")),
    Case("guest-qmp-socket-of-another-guest",
         guest(qmp_socket="/run/kvmnet/netns-4026532321/guests/q2/qmp.sock"),
         ("qmp_socket", "outside the guest's run directory")),
    Case("guest-bad-mac",
         "QemuGuest('q', QemuGuestArgs(connection=c, name='q1', kernel='/img/vmlinuz', "
         "nics=[GuestNicArgs(tap='vif9.0', mac='52:54:00:zz:00:01')]))",
         ("nics", "52:54:00:zz:00:01")),
    # the models (library API): guests' addresses, MACs and taps
    Case("model-address-300", "nat(G('g1', '10.0.1.300'))",
         ("guests[0] (g1).address", "10.0.1.300")),
    Case("model-address-outside", "nat(G('g1', '10.0.2.5'))",
         ("guests[0] (g1).address", "not inside subnet 10.0.1.0/24")),
    Case("model-address-is-gateway", "nat(G('g1', '10.0.1.254'))",
         ("guests[0] (g1).address", "is the gateway")),
    Case("model-address-twice", "nat(G('g1', '10.0.1.11'), G('g2', '10.0.1.11'))",
         ("guests[1] (g2).address", "already g1's address")),
    Case("model-mac-twice",
         "nat(G('g1', mac='52:54:00:00:01:07'), G('g2', mac='52:54:00:00:01:07'))",
         ("(g2).mac", "52:54:00:00:01:07")),
    Case("model-tap-twice", "nat(G('g1', tap='vif7.0'), G('g2', tap='vif7.0'))",
         ("(g2).tap", "vif7.0")),
    Case("model-forward-of-the-ssh-port",
         "nat(G('g1', '10.0.1.11'), port_forwards=[PortForwardSpec('g1', 22, 22)])",
         ("host_port", "must not be 22", "cut kvmnet off the host")),
    Case("model-forward-to-a-guest-without-address",
         "nat(G('g1'), port_forwards=[PortForwardSpec('g1', 80, 8080)])",
         ("n: port_forwards[0].guest", "guest 'g1' has no address")),
    Case("model-gateway-outside",
         "NatNetwork('n', NetworkArgs(connection=c, gateway='10.0.2.1', guests=[G('g1')]))",
         ("gateway", "not inside subnet")),
]  # fmt: skip


@pytest.fixture(scope="module")
def h1(lab: LabStatus) -> HostStatus:
    return lab.hosts[0]


@pytest.fixture(scope="module")
def check_stack(tmp_path_factory: pytest.TempPathFactory, h1: HostStatus) -> Iterator[TestStack]:
    stack = TestStack(tmp_path_factory.mktemp("check"), "", project="badinput")
    try:
        yield stack
    finally:
        stack.remove()


@pytest.fixture(scope="module")
def before(lab_api: Lab, h1: HostStatus) -> dict[str, Any]:
    return host_snapshot(lab_api, h1.namespace)


def head(h1: HostStatus) -> str:
    return textwrap.dedent(HEAD).format(
        address=h1.address, known_hosts=h1.known_hosts, key=h1.private_key, python=VENV_PY
    )


def test_a_good_program_previews(check_stack: TestStack, h1: HostStatus) -> None:
    """The harness itself: the same head with valid resources previews cleanly."""
    body = (
        bridge(addresses=["10.0.1.254/24"], mtu=1500, stp=True, forward_delay=2)
        + "\nTapPort('t', TapPortArgs(connection=c, name='vif1.0', bridge='br-ok'))"
        + "\nMasqueradeRule('m', MasqueradeRuleArgs(connection=c, source='10.0.1.0/24'))"
        + "\nRawBridge('raw', {})\nRawForwarding('f', {})\n"
    )
    check_stack.set_program(head(h1) + body)
    preview = check_stack.preview()
    assert "6 to create" in preview.stdout, preview.stdout


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_at_preview(
    case: Case,
    check_stack: TestStack,
    h1: HostStatus,
    lab_api: Lab,
    before: dict[str, Any],
) -> None:
    for key, value in case.config:
        check_stack.config(key, value)
    check_stack.set_program(head(h1) + case.body + "\n")
    try:
        result = check_stack.preview(check=False)
    finally:
        for key, _ in case.config:
            check_stack.pulumi("config", "rm", key)
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    for fragment in case.expect:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    after = host_snapshot(lab_api, h1.namespace)
    assert after == before, "\n".join(diff_snapshots(before, after))
