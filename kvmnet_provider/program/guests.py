"""A network's `guests` list from stack config as GuestSpecs, and the stack's `guests` output."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi

from ..errors import ConfigError
from ..models import GuestSpec
from . import defaults
from .defaults import NS
from .guest_defaults import default_mac, default_tap
from .guest_disks import guest_disk_args, guest_ready


def guest_image(cfg: pulumi.Config) -> tuple[str | None, str | None]:
    """The stack's kvmnet:guestImage {kernel, initrd}: every guest's unless it sets its own."""
    image = cfg.get_object("guestImage")
    if isinstance(image, dict):
        return image.get("kernel"), image.get("initrd")
    return None, None


def guest_specs(
    raw: list[dict[str, Any]],
    cfg: pulumi.Config,
    subnet: str,
    gateway: str | None,
    dhcp: bool = False,
    prop: str = f"{NS}:guests",
    mac_scope: str | None = None,
) -> list[GuestSpec]:
    """GuestSpecs of a network's `guests` list; image and stop timeout from the stack's.
    A guest without a tap or MAC gets one from its name (guest_defaults.py; the MAC also
    from the stack and `mac_scope`, the network's: `prop` unless given). On a network with
    DHCP the test image asks for its address by DHCP (kvmnet.ip=dhcp)."""
    stop_timeout = cfg.get_int("guestStopTimeout") or defaults.GUEST_STOP_TIMEOUT
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
            cmdline = image_cmdline(name, guest.get("address"), key, prefix, gateway, dhcp)
        guests.append(
            GuestSpec(
                name=name,
                address=guest.get("address"),
                tap=guest.get("tap") or default_tap(name),
                mac=guest.get("mac") or default_mac(project, stack, mac_scope or prop, name),
                memory_mib=int(guest.get("memory_mib", defaults.GUEST_MEMORY_MIB)),
                kernel=kernel,
                initrd=initrd,
                cmdline=cmdline,
                disks=guest.get("disks") or (),
                stop_timeout=int(guest.get("stop_timeout", stop_timeout)),
                ready=dict(ready) if (ready := guest_ready(guest, key)) else None,
                autostart=guest.get("autostart", True),
                **disk_args,
            )
        )
    return guests


def image_cmdline(
    name: str, address: str | None, key: str, prefix: int, gateway: str | None, dhcp: bool
) -> str:
    """The kernel command line of a guest booted directly that gives none: the test image
    configures eth0 from it (see scripts/guest-init)."""
    cmdline = f"console=ttyS0 quiet kvmnet.name={name}"
    if dhcp:
        return f"{cmdline} kvmnet.ip=dhcp"  # address, route and DNS from the lease
    if not address:
        raise ConfigError(
            f"{key}.address",
            "required on a network without DHCP: the guest configures this address "
            "itself (give it one in the subnet; routed and NAT networks can lease one "
            "with dhcp)",
        )
    cmdline += f" kvmnet.ip={address}/{prefix}"
    return f"{cmdline} kvmnet.gw={gateway}" if gateway else cmdline


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
            # IPv4: the reservation and the live lease (refresh renews them)
            "addresses": guests[g.name].addresses,
        }
        for g in specs
    }
