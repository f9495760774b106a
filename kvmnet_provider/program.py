"""The stack program: stack config in, one network model with its guests out.

`__main__.py` calls `build()`. Config keys (namespace `kvmnet:`):
  model        isolated | routed | nat (| bridged)
  lab          name of a `kvmnet lab` whose host to use (labStateDir, labHost optional)
  host         otherwise: {host, port, user, known_hosts, host_key, private_key_path,
               python, sudo} for a real host (secrets: sshPrivateKey / sshPassword, --secret)
  bridge       bridge name (br-in); subnet (10.0.1.0/24); gateway (routed/NAT: 10.0.1.254)
  uplink       NAT: limit the masquerade to this NIC
  guests       [{name, address, mac?, tap?, memory_mib?, disks?}]
  guestImage   {kernel, initrd} for direct boot, or "test" for the project's test image
  accelerator  auto | kvm | tcg
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

import pulumi

from .connection import HostSettings
from .models import GuestSpec, NetworkArgs, network_for_model

DEFAULT_GUESTS = [{"name": "g1", "address": "10.0.1.11"}, {"name": "g2", "address": "10.0.1.12"}]


def connection_from_config(cfg: pulumi.Config) -> HostSettings:
    lab_name = cfg.get("lab")
    if lab_name:
        from .lab import Lab

        status = Lab(lab_name, cfg.get("labStateDir")).status(check_ssh=False)
        host = status.host(cfg.get("labHost") or "h1")
        # Lab hosts share this machine's filesystem: the agent runs on this venv's Python.
        return HostSettings(
            host=host.address,
            port=host.port,
            user=host.user,
            known_hosts=host.known_hosts,
            private_key_path=host.private_key,
            python=cfg.get("hostPython") or sys.executable,
        )
    raw: dict[str, Any] = cfg.require_object("host")
    return HostSettings(**raw)


def guest_image(cfg: pulumi.Config) -> tuple[str | None, str | None]:
    if cfg.get("guestImage") == "test":
        from .testing.guest import guest_image_dir

        directory = guest_image_dir()
        return str(directory / "vmlinuz"), str(directory / "initrd.img")
    image = cfg.get_object("guestImage")
    if isinstance(image, dict):
        return image.get("kernel"), image.get("initrd")
    return None, None


def guests_from_config(cfg: pulumi.Config, subnet: str, gateway: str | None) -> list[GuestSpec]:
    raw: list[dict[str, Any]] = cfg.get_object("guests") or DEFAULT_GUESTS
    kernel, initrd = guest_image(cfg)
    prefix = ipaddress.ip_network(subnet).prefixlen
    guests = []
    for index, guest in enumerate(raw, start=1):
        name = guest["name"]
        cmdline = None
        if kernel:
            # The test image configures eth0 from these (see scripts/guest-init).
            cmdline = (
                f"console=ttyS0 quiet kvmnet.name={name} kvmnet.ip={guest['address']}/{prefix}"
            )
            if gateway:
                cmdline += f" kvmnet.gw={gateway}"
        guests.append(
            GuestSpec(
                name=name,
                address=guest.get("address"),
                tap=guest.get("tap") or f"vif{index}.0",
                mac=guest.get("mac") or f"52:54:00:00:01:{index:02x}",
                memory_mib=int(guest.get("memory_mib", 128)),
                kernel=kernel,
                initrd=initrd,
                cmdline=cmdline,
                disks=guest.get("disks") or (),
                # The test image ignores ACPI power-down: do not wait for it.
                stop_timeout=int(
                    guest.get("stop_timeout", 2 if cfg.get("guestImage") == "test" else 10)
                ),
            )
        )
    return guests


def build() -> None:
    cfg = pulumi.Config("kvmnet")
    model = cfg.get("model") or "nat"
    network_class = network_for_model(model)
    subnet = cfg.get("subnet") or "10.0.1.0/24"
    gateway = None if model == "isolated" else cfg.get("gateway") or "10.0.1.254"
    args = NetworkArgs(
        connection=connection_from_config(cfg),
        bridge=cfg.get("bridge") or "br-in",
        subnet=subnet,
        gateway=gateway,
        uplink=cfg.get("uplink"),
        guests=guests_from_config(cfg, subnet, gateway),
        accelerator=cfg.get("accelerator") or "auto",
    )
    network = network_class(cfg.get("name") or "net", args)
    pulumi.export("model", model)
    pulumi.export("host", args.connection.host)
    pulumi.export("bridge", network.bridge.name)
    pulumi.export("bridge_addresses", network.bridge.addresses)
    pulumi.export(
        "guests",
        {
            g.name: {
                "address": g.address,
                "pid": network.guests[g.name].pid,
                "console": network.guests[g.name].console_socket,
                "accelerator": network.guests[g.name].accelerator,
            }
            for g in args.guests
        },
    )
