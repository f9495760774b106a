"""Isolated, routed and NAT networks, after the tutorial's qemu-ifup scripts.

- isolated: a bridge with no address; guests' taps on it; nothing else.
- routed: the bridge carries the guests' gateway address and the host forwards IP.
- NAT: routed plus `-s NET ! -d NET -j MASQUERADE` (optionally `-o UPLINK`), written as libvirt
  does (spec/masquerade.py).
Routed and NAT networks get a DhcpServer (dnsmasq on the bridge: DHCP with a static lease per
guest, DNS `<guest>.<domain>`) unless `dhcp=False`; their guests start after it.
Each guest gets a TapPort on the bridge and a QemuGuest attached to it. Every model also gets
its ForwardRules (one per network, not per tap): what its bridge lets through the host's
filter FORWARD hook, so that a DROP policy (Docker's) and br_netfilter do not cut it off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from ..cloudinit import CloudInit
from ..connection import HostSettings
from ..errors import ConfigError, config_path
from ..resources import (
    Bridge,
    BridgeArgs,
    ForwardingSetting,
    ForwardingSettingArgs,
    GuestNicArgs,
    MasqueradeRule,
    MasqueradeRuleArgs,
    PortForward,
    PortForwardArgs,
    QemuGuest,
    QemuGuestArgs,
    TapPort,
    TapPortArgs,
)
from ..resources.dhcp import DhcpHost, DhcpServer, DhcpServerArgs
from ..resources.forward_rules import ForwardRules, ForwardRulesArgs
from ..resources.guest_ready import GuestReady, with_address
from ..resources.uplink import UplinkBridge, UplinkBridgeArgs
from ..spec.dhcp import DEFAULT_DOMAIN
from ..spec.models import MODELS, WITH_DHCP, uses_dhcp
from ..spec.models import model as model_named
from .addresses import check_dhcp, check_guests, forward_address, subnet_and_gateway, valid
from .collisions import claim
from .verify_check import network_check, verify_enabled


@dataclass
class GuestSpec:
    """One guest: its tap, MAC and how it boots (a kernel for direct boot, an overlay of a
    base image, or disks attached as they are)."""

    name: str
    tap: str
    mac: str
    # With DHCP: the guest's static lease (None: an address from the range). Without: what
    # the guest configures itself (informational).
    address: str | None = None
    memory_mib: int = 128
    vcpus: int = 1
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    disks: Sequence[dict[str, str]] = ()
    stop_timeout: int = 10  # seconds to wait for an ACPI power-down before quitting QEMU
    # A copy-on-write overlay of this host path is the guest's first (boot) disk.
    base_image: str | None = None
    base_format: str = "qcow2"  # or raw
    disk_size_gib: int | None = None
    keep_disk: bool = False  # destroy leaves the overlay on the host
    cloud_init: CloudInit | dict[str, Any] | None = None  # NoCloud seed, a read-only CD-ROM
    # The host user QEMU runs as; unset: a system user of this guest's own; "root" only if asked.
    run_as: str | None = None
    # What `up` waits for before the guest counts as made: GuestReady(lease, tcp, console,
    # timeout); tcp is tried on `address` when it is set.
    ready: GuestReady | dict[str, Any] | None = None
    # False: not started again when the host reboots (the host keeps no record of it).
    autostart: bool = True


@dataclass
class PortForwardSpec:
    """NAT model: outside traffic to the host's `host_port` goes to `guest`:`guest_port`."""

    guest: str
    guest_port: int
    host_port: int
    protocol: str = "tcp"


@dataclass
class NetworkArgs:
    connection: HostSettings
    bridge: str = "br-in"
    # The guests' subnet; routed and NAT put `gateway` on the bridge.
    subnet: str = "10.0.1.0/24"
    gateway: str | None = None
    # NAT: the NIC the masquerade is limited to (-o); bridged: the NIC the bridge takes over.
    uplink: str | None = None
    # Bridged: addresses for the bridge instead of the NIC's own (rarely right); rollback time.
    bridge_addresses_override: Sequence[str] = ()
    rollback_seconds: int = 30
    port_forwards: Sequence[PortForwardSpec] = ()
    guests: Sequence[GuestSpec] = field(default_factory=list)
    accelerator: str = "auto"
    # DHCP/DNS (dnsmasq) on the bridge: None = on for routed and NAT (the bridge has an
    # address), off otherwise; True on isolated or bridged is an error.
    dhcp: bool | None = None
    domain: str = DEFAULT_DOMAIN  # guests are <name>.<domain> in the network's DNS
    dhcp_range: tuple[str, str] | None = None  # default: the upper half of the subnet
    # The stack-config property the network was read from (kvmnet:hosts.h1.networks[0], or
    # `kvmnet:` for the one-host program's): errors name its keys instead of the resource name.
    config_key: str | None = None
    # False: nothing of the network comes back by itself when the host reboots (its guests
    # neither); `pulumi refresh` then shows it gone and `pulumi up` makes it again.
    autostart: bool = True
    # After up, a probe on the bridge checks the model's row (models/verify_check.py): None =
    # on for routed and NAT; verify_target is ADDRESS or ADDRESS:PORT (default: the host's
    # default gateway).
    verify: bool | None = None
    verify_target: str | None = None
    # True: `pulumi refresh` runs the check again; a failure shows as the check's drift (its
    # `failing` output) and the next `up` checks once more.
    verify_on_refresh: bool = False


def dhcp_enabled(model: str, args: NetworkArgs, where: str = "net") -> bool:
    """Whether a network of `model` (resource `where`) runs a DHCP server (ConfigError if
    it cannot)."""
    if args.dhcp and not MODELS[model].dhcp:
        article = "an" if model[0] in "aeiou" else "a"
        raise ConfigError(
            config_path(args.config_key, "dhcp") if args.config_key else f"{where}: dhcp",
            f"{article} {model} network's bridge has no address to serve from; leave dhcp "
            f"unset (or false), or make the network {' or '.join(WITH_DHCP)}",
        )
    return uses_dhcp(model, args.dhcp)


def check_autostart(resource_name: str, args: NetworkArgs) -> None:
    """`autostart` of the network and of each guest: a boolean (ConfigError naming it)."""
    where = args.config_key
    named = [("autostart", args.autostart)]
    named += [(f"guests[{i}].autostart", g.autostart) for i, g in enumerate(args.guests)]
    for name, value in named:
        if not isinstance(value, bool):
            key = config_path(where, name) if where else f"{resource_name}: {name}"
            raise ConfigError(key, f"must be true or false, got {value!r}")


def autostart_input(on: bool) -> bool | None:
    """A resource's `autostart` input: None (the default: on) keeps older states' inputs."""
    return None if on else False


class _Network(pulumi.ComponentResource):
    model = ""

    def __init__(
        self, resource_name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        check_guests(resource_name, args.subnet, args.gateway, args.guests, args.config_key)
        check_autostart(resource_name, args)
        self.dhcp_enabled = dhcp_enabled(self.model, args, resource_name)
        verified = verify_enabled(resource_name, self.model, args)
        if self.dhcp_enabled:
            check_dhcp(resource_name, args, args.config_key)
        # Aliases to the other models' types keep the children's URNs across a model switch,
        # so NAT -> routed removes the masquerade rule and leaves the bridge and guests alone.
        others = [c.__name__ for c in NETWORK_CLASSES.values() if c is not type(self)]
        aliases = [pulumi.Alias(type_=f"kvmnet:index:{m}") for m in others]
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=aliases))
        # Names unique per host: a collision fails the preview. Routed and NAT put the
        # subnet's gateway on the host, so their subnets must not overlap there either.
        claim(resource_name, args, host_subnet=MODELS[self.model].bridge_address)
        super().__init__(f"kvmnet:index:{type(self).__name__}", resource_name, None, opts)
        self.args = args
        self.autostart = autostart_input(args.autostart)
        child = pulumi.ResourceOptions(parent=self)
        self.bridge = self.make_bridge(resource_name, child)
        # The host's forwarding and rules follow the bridge: a bridge the host refuses (its
        # network would capture the host's traffic) leaves the host untouched.
        after_bridge = pulumi.ResourceOptions(parent=self, depends_on=[self.bridge])
        self.extras = self.host_setup(resource_name, after_bridge)
        self.dhcp: DhcpServer | None = None
        if self.dhcp_enabled:
            self.dhcp = self.dhcp_server(resource_name, child)
            self.extras.append(self.dhcp)
        self.taps: dict[str, TapPort] = {}
        self.guests: dict[str, QemuGuest] = {}
        for guest in args.guests:
            tap = TapPort(
                f"{resource_name}-{guest.name}-tap",
                TapPortArgs(
                    connection=args.connection,
                    name=guest.tap,
                    bridge=self.bridge,
                    autostart=autostart_input(args.autostart and guest.autostart),
                ),
                child,
            )
            # Guests start once the host side of their network is in place.
            after = pulumi.ResourceOptions(parent=self, depends_on=[tap, *self.extras])
            self.taps[guest.name] = tap
            self.guests[guest.name] = QemuGuest(
                f"{resource_name}-{guest.name}",
                QemuGuestArgs(
                    connection=args.connection,
                    autostart=autostart_input(args.autostart and guest.autostart),
                    name=guest.name,
                    memory_mib=guest.memory_mib,
                    vcpus=guest.vcpus,
                    kernel=guest.kernel,
                    initrd=guest.initrd,
                    cmdline=guest.cmdline,
                    disks=list(guest.disks),
                    nics=[GuestNicArgs(tap=tap, mac=guest.mac)],
                    accelerator=args.accelerator,
                    stop_timeout=guest.stop_timeout,
                    base_image=guest.base_image,
                    base_format=guest.base_format,
                    disk_size_gib=guest.disk_size_gib,
                    keep_disk=guest.keep_disk,
                    cloud_init=guest.cloud_init,
                    run_as=guest.run_as,
                    ready=with_address(guest.ready, guest.address),
                ),
                after,
            )
        self.check = network_check(self, resource_name) if verified else None
        self.register_outputs(
            {
                "model": self.model,
                "bridge": self.bridge.name,
                "guests": {
                    name: {
                        "pid": g.pid,
                        "console": g.console_socket,
                        "accelerator": g.accelerator,
                        "addresses": g.addresses,
                    }
                    for name, g in self.guests.items()
                },
                **({"leases": self.dhcp.leases} if self.dhcp else {}),
            }
        )

    def make_bridge(
        self, resource_name: str, opts: pulumi.ResourceOptions
    ) -> Bridge | UplinkBridge:
        args = self.args
        return Bridge(
            f"{resource_name}-bridge",
            BridgeArgs(
                connection=args.connection,
                name=args.bridge,
                addresses=self.bridge_addresses(),
                autostart=self.autostart,
            ),
            opts,
        )

    def bridge_addresses(self) -> list[str]:
        return []

    def dhcp_server(self, resource_name: str, opts: pulumi.ResourceOptions) -> DhcpServer:
        args = self.args
        assert args.gateway is not None  # routed and NAT require it (bridge_addresses)
        return DhcpServer(
            f"{resource_name}-dhcp",
            DhcpServerArgs(
                connection=args.connection,
                autostart=self.autostart,
                bridge=self.bridge.name,  # after the bridge and its address
                subnet=args.subnet,
                gateway=args.gateway,
                domain=args.domain,
                dhcp_range=args.dhcp_range,
                hosts=[DhcpHost(g.name, g.mac, g.address) for g in args.guests],
            ),
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[self.bridge])),
        )

    def host_setup(self, resource_name: str, opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        return [self.forward_rules(resource_name, opts)]

    def forward_rules(self, resource_name: str, opts: pulumi.ResourceOptions) -> ForwardRules:
        # One name for every model, so that a model switch updates the rules in place.
        args = self.args
        forwards = []
        if MODELS[self.model].nat:
            addresses = {g.name: g.address for g in args.guests}
            forwards = [
                {"guest": addresses[f.guest], "port": f.guest_port, "proto": f.protocol}
                for f in args.port_forwards
                if addresses.get(f.guest)
            ]
        return ForwardRules(
            f"{resource_name}-forward-rules",
            ForwardRulesArgs(
                connection=args.connection,
                autostart=self.autostart,
                mode=self.model,
                bridge=self.bridge.name,
                subnet=args.subnet if MODELS[self.model].bridge_address else None,
                forwards=forwards,
            ),
            opts,
        )


class IsolatedNetwork(_Network):
    model = "isolated"


class RoutedNetwork(_Network):
    model = "routed"

    def bridge_addresses(self) -> list[str]:
        if not self.args.gateway:
            raise ConfigError(f"{self.model} network: gateway", "required (the bridge's address)")
        net, gateway = subnet_and_gateway(self.args.subnet, self.args.gateway)
        return [f"{gateway}/{net.prefixlen}"]

    def host_setup(self, resource_name: str, opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        forwarding = ForwardingSetting(
            f"{resource_name}-forwarding",
            ForwardingSettingArgs(connection=self.args.connection, autostart=self.autostart),
            opts,
        )
        return [forwarding, self.forward_rules(resource_name, opts)]


class NatNetwork(RoutedNetwork):
    model = "nat"

    def host_setup(self, resource_name: str, opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        masquerade = MasqueradeRule(
            f"{resource_name}-masquerade",
            MasqueradeRuleArgs(
                connection=self.args.connection,
                autostart=self.autostart,
                source=self.args.subnet,
                out_interface=self.args.uplink,
            ),
            opts,
        )
        forwards: list[pulumi.Resource] = []
        key = self.args.config_key
        for index, fwd in enumerate(self.args.port_forwards):
            address = forward_address(resource_name, key, index, fwd.guest, self.args.guests)
            forwards.append(
                PortForward(
                    f"{resource_name}-forward-{fwd.protocol}-{fwd.host_port}",
                    PortForwardArgs(
                        connection=self.args.connection,
                        autostart=self.autostart,
                        protocol=fwd.protocol,
                        host_port=fwd.host_port,
                        guest_address=address,
                        guest_port=fwd.guest_port,
                        in_interface=self.args.uplink,
                    ),
                    opts,
                )
            )
        return [*super().host_setup(resource_name, opts), masquerade, *forwards]


class BridgedNetwork(_Network):
    """The host's NIC (`uplink`) becomes a port of the bridge, which takes over its MAC,
    addresses and routes under a rollback; guests are peers on the LAN."""

    model = "bridged"

    def make_bridge(
        self, resource_name: str, opts: pulumi.ResourceOptions
    ) -> Bridge | UplinkBridge:
        args = self.args
        if not args.uplink:
            key = "bridged network: uplink"
            if args.config_key:
                key = config_path(args.config_key, "uplink")
            raise ConfigError(key, "required (the NIC the bridge takes over)")
        return UplinkBridge(
            f"{resource_name}-uplink",
            UplinkBridgeArgs(
                connection=args.connection,
                autostart=self.autostart,
                name=args.bridge,
                nic=args.uplink,
                addresses=list(args.bridge_addresses_override),
                rollback_seconds=args.rollback_seconds,
            ),
            opts,
        )


NETWORK_CLASSES: dict[str, type[_Network]] = {
    cls.model: cls for cls in (IsolatedNetwork, RoutedNetwork, NatNetwork, BridgedNetwork)
}


def network_for_model(model: str) -> type[_Network]:
    return NETWORK_CLASSES[valid(model_named, model, "model").name]
