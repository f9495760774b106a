"""The stack program: stack config in, one network model with its guests out.

`__main__.py` calls `build()`. Config keys (namespace `kvmnet:`):
  model        isolated | routed | nat (| bridged)
  lab          name of a `kvmnet lab` whose host to use (labStateDir, labHost optional)
  host         otherwise: {host, port, user, known_hosts, host_key, private_key_path,
               python, sudo} for a real host (secrets: sshPrivateKey / sshPassword, --secret)
  bridge       bridge name (br-in); subnet (10.0.1.0/24); gateway (routed/NAT: 10.0.1.254)
  uplink       NAT: limit the masquerade to this NIC
  guests       [{name, address, mac?, tap?, memory_mib?, disks?}]
  portForwards NAT: [{guest, guest_port, host_port, protocol?}] (DNAT from the host's port)
  guestImage   {kernel, initrd} for direct boot, or "test" for the project's test image
  accelerator  auto | kvm | tcg
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pulumi

from .connection import HostSettings
from .lab.state import LabStatus
from .models import GuestSpec, NetworkArgs, PortForwardSpec, network_for_model
from .program_checks import check_stack_config
from .resources import Bridge
from .toolchain import venv_python

DEFAULT_GUESTS = [{"name": "g1", "address": "10.0.1.11"}, {"name": "g2", "address": "10.0.1.12"}]


def lab_status(cfg: pulumi.Config) -> LabStatus | None:
    lab_name = cfg.get("lab")
    if not lab_name:
        return None
    from .lab import Lab

    return Lab(lab_name, cfg.get("labStateDir")).status(check_ssh=False)


def connection_from_config(cfg: pulumi.Config) -> HostSettings:
    status = lab_status(cfg)
    if status is not None:
        host = status.host(cfg.get("labHost") or "h1")
        return HostSettings.for_lab_host(host, cfg.get("hostPython") or venv_python())
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


def guests_from_config(
    cfg: pulumi.Config, subnet: str, gateway: str | None, lab: LabStatus | None = None
) -> list[GuestSpec]:
    bridged_lab = lab is not None and cfg.get("model") == "bridged"
    default = lan_guests(lab.lan) if lab is not None and bridged_lab else DEFAULT_GUESTS
    raw: list[dict[str, Any]] = cfg.get_object("guests") or default
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


def lan_guests(lan: str, count: int = 2) -> list[dict[str, Any]]:
    """Bridged guests on the lab LAN: .50, .51, ..."""
    base = ipaddress.ip_network(lan).network_address
    return [{"name": f"g{i}", "address": str(base + 49 + i)} for i in range(1, count + 1)]


def build() -> None:
    cfg = pulumi.Config("kvmnet")
    check_stack_config(cfg, [g["name"] for g in DEFAULT_GUESTS])  # one line naming the key
    model = cfg.get("model") or "nat"
    network_class = network_for_model(model)
    subnet = cfg.get("subnet") or "10.0.1.0/24"
    gateway = None if model == "isolated" else cfg.get("gateway") or "10.0.1.254"
    uplink = cfg.get("uplink")
    lab = lab_status(cfg)
    if model == "bridged" and lab is not None:
        # Guests are peers on the lab's LAN; the host's eth0 is the NIC to bridge.
        subnet, gateway, uplink = lab.lan, lab.gateway, uplink or "eth0"
    args = NetworkArgs(
        connection=connection_from_config(cfg),
        bridge=cfg.get("bridge") or "br-in",
        subnet=subnet,
        gateway=gateway,
        uplink=uplink,
        guests=guests_from_config(cfg, subnet, gateway, lab),
        accelerator=cfg.get("accelerator") or "auto",
        bridge_addresses_override=cfg.get_object("bridgeAddresses") or (),
        rollback_seconds=cfg.get_int("rollbackSeconds") or 30,
        port_forwards=[
            PortForwardSpec(
                guest=f["guest"],
                guest_port=int(f["guest_port"]),
                host_port=int(f["host_port"]),
                protocol=f.get("protocol", "tcp"),
            )
            for f in cfg.get_object("portForwards") or []
        ],
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
