"""QemuGuest: one QEMU guest on a host, detached, found again by pidfile and QMP."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, DiffResult

from ..cloudinit import (
    CloudInit,
    build_seed,
    cloud_init_digest,
    normalise_cloud_init,
    seed_files,
)
from ..connection import HostSettings
from ..connection.session import AgentSession
from ..errors import KvmnetError
from ..spec import guest as guests
from ..spec.ready import readiness
from ..spec.validate import boolean, int_range, user_name
from ..spec.wire import GuestRef, GuestState
from .attach import RestartsCutOffGuests
from .autostart import autostart_field
from .base import KvmnetProvider, _has_unknown, host_key
from .declare import DeclaredResource, declaration, field_table, kvmnet_field
from .guest_disk import replace_warning, shrunk_disk
from .guest_ready import PROBE_TIMEOUT, GuestReady, addresses, probe_args, ready_prop, wait_ready
from .links import TapPort

# Inputs the host resolves (auto -> kvm|tcg, an unset socket -> a path in the run dir): the
# outputs carry the resolved value, and what was asked for is kept under "requested".
RESOLVED = ("accelerator", "console_socket", "qmp_socket")
# user-data holds passwords and keys: the inputs carry it as a Pulumi secret, and the outputs
# keep only its digest (a secret too), never the text.
SECRET_OUTPUTS = ["cloud_init", "cloud_init_sha256"]
START_TIMEOUT = 180.0
# Changed in place by restarting the guest; every other field that does not replace it
# (stop_timeout, keep_disk) needs nothing on the host.
RESTARTS = (
    "memory_mib",
    "vcpus",
    "disks",
    "kernel",
    "initrd",
    "cmdline",
    "nics",
    "accelerator",
    "cpu",
    "qemu",
    "disk_size_gib",
)


def _int(low: int, high: int) -> Any:
    return lambda v: int_range(v, low, high)


@dataclass
class GuestNicArgs:
    """A NIC on a tap that already exists on its bridge (QEMU opens it, script=no)."""

    tap: TapPort | pulumi.Input[str]
    mac: str
    model: str = "virtio-net-pci"  # or e1000


@dataclass
class GuestDiskArgs:
    """An image file on the host."""

    path: str
    format: str  # raw or qcow2
    interface: str = "virtio"  # or ide


def _nic_props(nics: Sequence[GuestNicArgs]) -> list[dict[str, pulumi.Input[str]]]:
    return [
        {"tap": nic.tap.name if isinstance(nic.tap, TapPort) else nic.tap, "mac": nic.mac,
         "model": nic.model}
        for nic in nics
    ]  # fmt: skip


def _disk_props(disks: Sequence[GuestDiskArgs | dict[str, str]]) -> list[dict[str, str]]:
    return [dataclasses.asdict(d) if isinstance(d, GuestDiskArgs) else dict(d) for d in disks]


def _secret_cloud_init(value: CloudInit | dict[str, Any]) -> Any:
    """user-data holds passwords and keys: the state keeps it as a Pulumi secret."""
    return pulumi.Output.secret(value.to_props() if isinstance(value, CloudInit) else value)


# What only changes QEMU's command line is an update: the guest is powered down (bounded by
# stop_timeout) and started again on the same overlay and seed. What makes another disk or
# another instance (name, base, seed, socket paths, run_as) replaces it; keep_disk (what
# delete leaves) only matters at delete.
@declaration
class QemuGuestArgs:
    connection: HostSettings
    name: str = kvmnet_field(guests.guest_name, replaces=True)
    memory_mib: int = kvmnet_field(_int(*guests.MEMORY_MIB), default=128)
    vcpus: int = kvmnet_field(_int(*guests.VCPUS), default=1)
    disks: Sequence[GuestDiskArgs | dict[str, str]] = kvmnet_field(
        guests.disks, default_factory=list, prop=_disk_props
    )
    # direct boot: a kernel on the host, an optional initrd and kernel command line
    kernel: str | None = kvmnet_field(guests.host_path, default=None)
    initrd: str | None = kvmnet_field(guests.host_path, default=None)
    cmdline: str | None = kvmnet_field(guests.kernel_cmdline, default=None)
    nics: Sequence[GuestNicArgs] = kvmnet_field(guests.nics, default_factory=list, prop=_nic_props)
    # kvm, tcg, or auto: KVM only where a probe shows it works
    accelerator: str = kvmnet_field(guests.accelerator, default="auto")
    # QEMU -cpu; default host under KVM, QEMU's own under TCG
    cpu: str | None = kvmnet_field(guests.cpu_model, default=None)
    # default: in the guest's run dir on the host
    console_socket: str | None = kvmnet_field(guests.socket_path, default=None, replaces=True)
    qmp_socket: str | None = kvmnet_field(guests.socket_path, default=None, replaces=True)
    qemu: str = kvmnet_field(guests.qemu_binary, default=guests.DEFAULT_QEMU)
    # seconds delete waits for an ACPI power-down before quitting
    stop_timeout: int = kvmnet_field(_int(1, 300), default=10)
    # a host user QEMU runs as once set up (QEMU's -runas)
    run_as: str | None = kvmnet_field(user_name, default=None, replaces=True)
    # Boot from a copy-on-write overlay of this image on the host (the first, virtio disk).
    # The overlay is made at create from the base: another base or format is another disk;
    # a larger size grows it in place.
    base_image: str | None = kvmnet_field(guests.host_path, default=None, replaces=True)
    base_format: str = kvmnet_field(guests.base_format, default="qcow2", replaces=True)  # or raw
    # grow the overlay to this size (>= the base's; later only larger)
    disk_size_gib: int | None = kvmnet_field(_int(*guests.DISK_SIZE_GIB), default=None)
    # delete leaves the overlay (at the disk_path output)
    keep_disk: bool = kvmnet_field(boolean, default=False)
    # cloud-init NoCloud: a `cidata` seed ISO attached as a read-only CD-ROM. cloud-init
    # reads its seed at a new instance's first boot: another seed, another guest.
    cloud_init: CloudInit | dict[str, Any] | None = kvmnet_field(
        normalise_cloud_init, default=None, replaces=True, prop=_secret_cloud_init
    )
    # create and update return once the guest is ready (guest_ready.py); unset: at start
    ready: GuestReady | dict[str, Any] | None = kvmnet_field(
        readiness, default=None, prop=ready_prop
    )
    autostart: bool | None = autostart_field()


class QemuGuestProvider(RestartsCutOffGuests, KvmnetProvider):
    kind = "QemuGuest"
    fields = field_table(QemuGuestArgs)

    def resource_id(self, props: dict[str, Any]) -> str:
        return f"{host_key(props)}/guest/{props['name']}"

    def cross_check(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        return guests.cross_check(props)

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        result = super().check(olds, news)
        if not result.failures:
            shrink = shrunk_disk(olds, result.inputs)
            if shrink:
                result.failures = [CheckFailure("disk_size_gib", shrink)]
        return result

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Compare what was asked for, not what the host resolved it to; cloud_init by the
        # digest the outputs keep of it.
        olds = self._asked(olds, news)
        result = super().diff(_id, olds, news)
        if result.replaces:
            warning = replace_warning(olds, news, result.replaces or [])
            if warning:
                pulumi.log.warn(warning)
        return result

    def _asked(self, olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
        """The old outputs as inputs: what was asked for, cloud_init by its digest."""
        olds = {**olds, **self._requested(olds)}
        new_ci, old_digest = news.get("cloud_init"), olds.get("cloud_init_sha256")
        was = None if old_digest is None else {"sha256": old_digest}  # never equals an input
        if new_ci is not None and not _has_unknown(new_ci) and not _has_unknown(news.get("name")):
            same = cloud_init_digest(new_ci, news["name"]) == old_digest
            olds["cloud_init"] = new_ci if same else was
        else:
            olds["cloud_init"] = was
        return olds

    def spec(self, props: dict[str, Any]) -> dict[str, Any]:
        """The agent gets the seed ISO's bytes, built here, instead of cloud_init."""
        spec = super().spec(props)
        spec.pop("ready", None)  # the provider waits, not the agent's start
        normal = spec.pop("cloud_init", None)
        if normal is not None:
            iso = build_seed(seed_files(normal, props["name"]))
            spec["seed_iso"] = base64.b64encode(iso).decode()
        return spec

    @staticmethod
    def _requested(props: dict[str, Any]) -> dict[str, Any]:
        requested = props.get("requested")
        if isinstance(requested, dict):
            return {k: requested.get(k) for k in RESOLVED}
        return {k: props.get(k) for k in RESOLVED}

    def _outputs(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        normal = props.get("cloud_init")
        digest = (
            cloud_init_digest(normal, props["name"])
            if normal is not None
            else props.get("cloud_init_sha256")
        )
        return {
            **props,
            **live,
            "requested": self._requested(props),
            "cloud_init": None,
            "cloud_init_sha256": digest,
        }

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        live: GuestState = agent.call("guest.start", self.spec(props), timeout=START_TIMEOUT)
        try:
            return self._probed(agent, props, dict(live))
        except BaseException:
            self.host_delete(agent, props)  # all or nothing: a guest that never got ready goes
            raise

    def _probed(
        self, agent: AgentSession, props: dict[str, Any], live: dict[str, Any], wait: bool = True
    ) -> dict[str, Any]:
        """The live state with the guest's addresses; once it is ready when `wait`."""

        def probe(args: dict[str, Any]) -> dict[str, Any]:
            answer: dict[str, Any] = agent.call("guest.probe", args, timeout=PROBE_TIMEOUT)
            return answer

        ready = props.get("ready")
        if wait and ready is not None:  # normalised again: the engine drops its null keys
            seen = wait_ready(probe, props, readiness(ready))
        else:
            seen = probe(probe_args(props, None))
        return {**live, "addresses": addresses(seen)}

    def host_read(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any] | None:
        ref: GuestRef = {"name": props["name"], "owner": props["owner"]}
        live: GuestState | None = agent.call("guest.read", dict(ref))
        return None if live is None else self._probed(agent, props, dict(live), wait=False)

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        asked = self._asked(olds, news)
        if olds.get("replaced_taps") or any(asked.get(k) != news.get(k) for k in RESTARTS):
            # The agent's start powers the running guest down (stop_timeout) and starts it
            # with the new command line on the same overlay, grown first when asked; a guest
            # cut off by taps made again under it (attach.py) restarts the same way.
            timeout = START_TIMEOUT + int(news.get("stop_timeout") or 10) + 30.0
            live: GuestState = agent.call("guest.start", self.spec(news), timeout=timeout)
            return self._probed(agent, news, dict(live))
        # Only stop_timeout, keep_disk (or connection details of the same host) changed:
        # nothing to do on the host but make sure the guest is still there.
        ref: GuestRef = {"name": news["name"], "owner": news["owner"]}
        found: GuestState | None = agent.call("guest.read", dict(ref))
        if found is None:
            raise KvmnetError(
                f"guest {news['name']} is not running on {news['connection']['host']}; "
                "run `pulumi refresh` and `pulumi up` to start it again"
            )
        return self._probed(agent, news, dict(found))

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        stop_timeout = int(props.get("stop_timeout") or 10)
        ref: GuestRef = {
            "name": props["name"],
            "owner": props["owner"],
            "stop_timeout": stop_timeout,
            "keep_disk": bool(props.get("keep_disk")),
        }
        stopped = agent.call("guest.stop", dict(ref), timeout=stop_timeout + 90.0)
        kept = stopped.get("kept_disk") if isinstance(stopped, dict) else None
        if kept:  # say where the disk stays (the provider's stderr reaches the engine's log)
            host = props["connection"]["host"]
            pulumi.log.warn(f"guest {props['name']}: keep_disk: its overlay stays at {host}:{kept}")


class QemuGuest(DeclaredResource[QemuGuestArgs], module="kvmnet", name="QemuGuest"):
    provider_type = QemuGuestProvider

    name: pulumi.Output[str]
    pid: pulumi.Output[int]
    status: pulumi.Output[str]
    console_socket: pulumi.Output[str]
    console_log: pulumi.Output[str]
    qmp_socket: pulumi.Output[str]
    macs: pulumi.Output[list[str]]
    replaced_taps: pulumi.Output[list[str]]  # taps made again under it: an update restarts it
    accelerator: pulumi.Output[str]
    accelerator_reason: pulumi.Output[str]
    run_dir: pulumi.Output[str]
    argv_sha256: pulumi.Output[str]
    requested: pulumi.Output[dict[str, str | None]]
    disk_path: pulumi.Output[str | None]
    seed_path: pulumi.Output[str | None]
    cloud_init_sha256: pulumi.Output[str | None]
    # IPv4: its reservations and live leases (by MAC), and ready.address; refresh renews them
    addresses: pulumi.Output[list[str]]

    def options(self, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
        secret = pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS)
        return pulumi.ResourceOptions.merge(opts, secret)


__all__ = [
    "CloudInit",
    "GuestDiskArgs",
    "GuestReady",
    "GuestNicArgs",
    "QemuGuest",
    "QemuGuestArgs",
    "QemuGuestProvider",
]
