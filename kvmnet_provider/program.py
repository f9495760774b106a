"""The stack program: stack config in, one network model with its guests out.

`__main__.py` calls `build()`. It reads plain stack config only (namespace `kvmnet:`), so
any Pulumi project can use it; `kvmnet lab up` / `kvmnet demo up` and the tests write a lab
host's connection and the test image's paths into it.
  model             isolated | routed | nat | bridged
  host              {host, port, user, known_hosts, host_key, private_key_path, python, sudo,
                    connect_timeout, allow_agent} (secrets: kvmnet:sshPrivateKey /
                    kvmnet:sshPassword, or per host kvmnet:sshCredentials, set with --secret)
  bridge            bridge name (br-in); subnet (10.0.1.0/24); gateway (routed/NAT: 10.0.1.254)
  uplink            NAT: limit the masquerade to this NIC; bridged: the NIC to bridge (eth0)
  guests            [{name, address?, mac?, tap?, memory_mib?, disks?, stop_timeout?,
                    kernel?, initrd?, cmdline?, baseImage?, baseFormat?, diskSizeGib?,
                    keepDisk?, cloudInit?: {userData, metaData?, networkConfig?}}]
                    (tap and mac default to ones made from the guest's name: guest_defaults.py;
                    with DHCP, `address` is the guest's static lease; none: one from the range;
                    a guest's own kernel/initrd win over guestImage, and its cmdline is used
                    as written, e.g. `root=/dev/vda console=ttyS0` for the Debian image;
                    baseImage is a qcow2/raw path on the host the guest boots from through its
                    own copy-on-write overlay; cloudInit a NoCloud seed, user-data secret)
  dhcp              routed/NAT: DHCP and DNS on the bridge (dnsmasq); default true there,
                    false (and not allowed) for isolated and bridged
  domain            the network's DNS domain (kvm.internal): guests are NAME.DOMAIN
  dhcpRange         [start, end] of the dynamic range (default: the subnet's upper half)
  portForwards      NAT: [{guest, guest_port, host_port, protocol?}] (DNAT from the host's port)
  guestImage        {kernel, initrd}: paths on the host for direct boot (the guest gets
                    kvmnet.ip= / kvmnet.gw= / kvmnet.name= on its kernel command line;
                    kvmnet.ip=dhcp on a network with DHCP)
  guestStopTimeout  seconds to wait for a guest's ACPI power-down (default 10)
  accelerator       auto | kvm | tcg
  bridgeAddresses   bridged: addresses for the bridge instead of the NIC's; rollbackSeconds
  hosts             several hosts instead of `host`: see fleet.py
  firewallBackend   auto | iptables | nftables: the host's firewall backend (default auto)
  name              the network's resource name (net)
Any other `kvmnet:` key fails preview naming it (program_checks.STACK_KEYS, which also lists
the keys the provider reads itself: the credentials and keepSessions).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi

from .connection import HostSettings
from .connection.settings import SettingError
from .errors import ConfigError
from .guest_defaults import default_mac, default_tap
from .guest_disk_config import guest_disk_args
from .models import GuestSpec, NetworkArgs, PortForwardSpec, network_for_model
from .program_checks import (
    check_stack_config,
    check_stack_keys,
    check_structured_keys,
    stack_config_keys,
)
from .resources import Bridge

NS = "kvmnet"
DEFAULT_GUESTS = [{"name": "g1", "address": "10.0.1.11"}, {"name": "g2", "address": "10.0.1.12"}]


def connection_from_config(cfg: pulumi.Config) -> HostSettings:
    raw: dict[str, Any] = cfg.require_object("host")
    try:
        settings = HostSettings.from_props(raw, "kvmnet:host")
    except SettingError as exc:
        raise ConfigError(exc.prop, exc.reason) from None
    backend = cfg.get("firewallBackend")
    return dataclasses.replace(settings, firewall_backend=backend) if backend else settings


def guest_image(cfg: pulumi.Config) -> tuple[str | None, str | None]:
    image = cfg.get_object("guestImage")
    if isinstance(image, dict):
        return image.get("kernel"), image.get("initrd")
    return None, None


def guests_from_config(
    cfg: pulumi.Config, subnet: str, gateway: str | None, dhcp: bool = False
) -> list[GuestSpec]:
    raw: list[dict[str, Any]] = cfg.get_object("guests") or DEFAULT_GUESTS
    return guest_specs(raw, cfg, subnet, gateway, dhcp=dhcp)


def uses_dhcp(model: str, dhcp: object) -> bool:
    """Whether the network runs DHCP (as the model decides: see models.dhcp_enabled)."""
    return model in ("routed", "nat") if dhcp is None else bool(dhcp)


def dhcp_settings(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """NetworkArgs' dhcp, domain and dhcp_range from stack config values (`key` prefixes
    the names in errors)."""
    dhcp, domain, rng = raw.get("dhcp"), raw.get("domain"), raw.get("dhcpRange")
    if dhcp is not None and not isinstance(dhcp, bool):
        raise ConfigError(f"{key}dhcp", f"must be true or false, got {dhcp!r}")
    if domain is not None and not isinstance(domain, str):
        raise ConfigError(f"{key}domain", f"must be a DNS domain, got {domain!r}")
    if rng is not None and (not isinstance(rng, list) or len(rng) != 2):
        raise ConfigError(f"{key}dhcpRange", f"must be [start, end], got {rng!r}")
    out: dict[str, Any] = {"dhcp": dhcp, "dhcp_range": tuple(rng) if rng else None}
    if domain is not None:
        out["domain"] = domain
    return out


def guest_specs(
    raw: list[dict[str, Any]],
    cfg: pulumi.Config,
    subnet: str,
    gateway: str | None,
    dhcp: bool = False,
    prop: str = "kvmnet:guests",
    mac_scope: str | None = None,
) -> list[GuestSpec]:
    """GuestSpecs of a network's `guests` list; image and stop timeout from the stack's.
    A guest without a tap or MAC gets one from its name (guest_defaults.py; the MAC also
    from the stack and `mac_scope`, the network's: `prop` unless given). On a network with
    DHCP the test image asks for its address by DHCP (kvmnet.ip=dhcp)."""
    stop_timeout = cfg.get_int("guestStopTimeout") or 10
    stack_kernel, stack_initrd = guest_image(cfg)
    prefix = ipaddress.ip_network(subnet).prefixlen
    # Outside an engine (unit tests without mocks) there is no project or stack.
    project, stack = pulumi.get_project() or "", pulumi.get_stack() or ""
    guests = []
    for index, guest in enumerate(raw):
        key = f"{prop}[{index}]"
        name = guest.get("name")
        if not name:
            raise ConfigError(f"{key}.name", "required (the guest's name on its host)")
        kernel = guest.get("kernel") or stack_kernel
        initrd = guest.get("initrd") or stack_initrd
        disk_args = guest_disk_args(guest, key)
        if not (kernel or disk_args.get("base_image") or guest.get("disks")):
            raise ConfigError(
                key,
                f"guest {name} has nothing to boot: set the stack's {NS}:guestImage "
                "{kernel, initrd} (paths on the host), or the guest's kernel, baseImage or disks",
            )
        cmdline = guest.get("cmdline")
        if kernel and cmdline is None:
            # The test image configures eth0 from these (see scripts/guest-init).
            cmdline = f"console=ttyS0 quiet kvmnet.name={name}"
            if dhcp:
                cmdline += " kvmnet.ip=dhcp"  # address, route and DNS from the lease
            elif not guest.get("address"):
                raise ConfigError(
                    f"{key}.address",
                    "required on a network without DHCP: the guest configures this address "
                    "itself (give it one in the subnet; routed and NAT networks can lease one "
                    "with dhcp)",
                )
            else:
                cmdline += f" kvmnet.ip={guest['address']}/{prefix}"
                if gateway:
                    cmdline += f" kvmnet.gw={gateway}"
        guests.append(
            GuestSpec(
                name=name,
                address=guest.get("address"),
                tap=guest.get("tap") or default_tap(name),
                mac=guest.get("mac") or default_mac(project, stack, mac_scope or prop, name),
                memory_mib=int(guest.get("memory_mib", 128)),
                kernel=kernel,
                initrd=initrd,
                cmdline=cmdline,
                disks=guest.get("disks") or (),
                stop_timeout=int(guest.get("stop_timeout", stop_timeout)),
                **disk_args,
            )
        )
    return guests


def guest_outputs(specs: Sequence[GuestSpec], guests: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's `guests` output: per guest its address, PID, console socket and the
    console's log (where cloud-init's finished line and the guest's host keys show)."""
    return {
        g.name: {
            "address": g.address,
            "pid": guests[g.name].pid,
            "console": guests[g.name].console_socket,
            "console_log": guests[g.name].console_log,
            "accelerator": guests[g.name].accelerator,
        }
        for g in specs
    }


def port_forward_specs(raw: list[dict[str, Any]] | None) -> list[PortForwardSpec]:
    """PortForwardSpecs of a network's `portForwards` list (checked by program_checks)."""
    return [
        PortForwardSpec(
            guest=f["guest"],
            guest_port=int(f["guest_port"]),
            host_port=int(f["host_port"]),
            protocol=f.get("protocol", "tcp"),
        )
        for f in raw or []
    ]


def build() -> None:
    cfg = pulumi.Config("kvmnet")
    check_stack_keys(stack_config_keys())  # a typo'd key fails instead of being ignored
    check_structured_keys(cfg)
    if cfg.get_object("hosts") is not None:
        from .fleet import build_fleet  # several hosts: kvmnet:hosts (see fleet.py)

        build_fleet(cfg)
        return
    check_stack_config(cfg, [g["name"] for g in DEFAULT_GUESTS])  # one line naming the key
    model = cfg.get("model") or "nat"
    network_class = network_for_model(model)
    subnet = cfg.get("subnet") or "10.0.1.0/24"
    gateway = None if model == "isolated" else cfg.get("gateway") or "10.0.1.254"
    uplink = cfg.get("uplink")
    # `domain` is a plain string in the stack file: get_object would want JSON.
    raw_dhcp = {"dhcp": cfg.get_object("dhcp"), "domain": cfg.get("domain"),
                "dhcpRange": cfg.get_object("dhcpRange")}  # fmt: skip
    dhcp = dhcp_settings(raw_dhcp, f"{NS}:")
    args = NetworkArgs(
        connection=connection_from_config(cfg),
        bridge=cfg.get("bridge") or "br-in",
        subnet=subnet,
        gateway=gateway,
        uplink=uplink,
        guests=guests_from_config(cfg, subnet, gateway, uses_dhcp(model, dhcp["dhcp"])),
        accelerator=cfg.get("accelerator") or "auto",
        bridge_addresses_override=cfg.get_object("bridgeAddresses") or (),
        rollback_seconds=cfg.get_int("rollbackSeconds") or 30,
        port_forwards=port_forward_specs(cfg.get_object("portForwards")),
        config_key=f"{NS}:",  # errors name the keys as typed (kvmnet:guests[1].tap)
        **dhcp,
    )
    network = network_class(cfg.get("name") or "net", args)
    pulumi.export("model", model)
    pulumi.export("host", args.connection.host)
    pulumi.export("bridge", network.bridge.name)
    if isinstance(network.bridge, Bridge):
        pulumi.export("bridge_addresses", network.bridge.addresses)
    else:
        pulumi.export("uplink_addresses", network.bridge.live_addresses)
    pulumi.export("port_forwards", [vars(f) for f in args.port_forwards])
    pulumi.export("guests", guest_outputs(args.guests, network.guests))
    if network.dhcp is not None:
        pulumi.export("leases", network.dhcp.leases)
