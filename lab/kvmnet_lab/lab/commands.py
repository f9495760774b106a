"""`kvmnet lab up|status|down`: argparse wiring for the lab (registered by kvmnet_lab.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from kvmnet_provider.spec.models import MODEL_NAMES

from .core import Lab, LabError, LabNotUp
from .naming import MAX_HOSTS
from .state import LabStatus


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = subparsers.add_parser("lab", help="the built-in lab of namespace KVM hosts")
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="{up,status,down,config}")

    up = sub.add_parser("up", help="build the lab (idempotent)")
    up.add_argument("--hosts", type=int, default=2, help=f"KVM hosts, 1..{MAX_HOSTS}")
    up.add_argument("--json", action="store_true", help="print the status as JSON")
    up.add_argument(
        "--vm", action="store_true",
        help="also boot a real KVM host: the Debian VM host image under QEMU on the LAN",
    )  # fmt: skip
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="show the lab and whether SSH reaches each host")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="remove everything the lab made")
    down.set_defaults(func=cmd_down)

    config = sub.add_parser(
        "config", help="write a lab host's connection into a stack config file (merged)"
    )
    config.add_argument("file", type=Path, help="stack config file, e.g. stacks/Pulumi.mine.yaml")
    config.add_argument("--host", default="h1", help="lab host (default h1)")
    config.add_argument("--model", choices=MODEL_NAMES)
    config.add_argument(
        "--test-image", action="store_true", help="guests boot the project's test image"
    )
    config.set_defaults(func=cmd_config)


def _lab(args: argparse.Namespace) -> Lab:
    return Lab(args.name, args.state_dir)


def format_table(status: LabStatus) -> str:
    lines = [
        f"lab {status.name}  lan {status.lan}  gateway {status.gateway}  "
        f"operator {status.operator_address}",
        f"state dir {status.state_dir}",
        "",
        f"{'HOST':<6} {'NAMESPACE':<18} {'ADDRESS':<16} {'SSH':<4}",
    ]
    for h in status.hosts:
        lines.append(
            f"{h.name:<6} {h.namespace:<18} {h.address:<16} {'yes' if h.ssh_reachable else 'no':<4}"
        )
    e = status.ext
    lines.append(f"{'ext':<6} {e.namespace:<18} {e.address:<16} echo :{e.echo_port}")
    return "\n".join(lines)


def _print(status: LabStatus, as_json: bool) -> None:
    print(status.to_json() if as_json else format_table(status))


def lab_up_or_say_why(lab: Lab, hosts: int, cleanup_hint: str) -> LabStatus | None:
    """lab.up(), or None after telling stderr why not (and, for a half-built lab, how to
    clean up)."""
    try:
        return lab.up(hosts=hosts)
    except LabError as exc:
        print(f"kvmnet: {exc}", file=sys.stderr)
    except Exception as exc:
        print(f"kvmnet: lab up failed: {exc}\n{cleanup_hint}", file=sys.stderr)
    return None


def cmd_up(args: argparse.Namespace) -> int:
    lab = _lab(args)
    status = lab_up_or_say_why(lab, args.hosts, "(run `kvmnet lab down` to clean)")
    if status is None:
        return 1
    _print(status, args.json)
    ok = all(h.ssh_reachable for h in status.hosts)
    return (0 if ok else 1) if not args.vm else (_vm_up(lab, args.json) or int(not ok))


def _vm_up(lab: Lab, as_json: bool) -> int:
    """Boot the VM host beside the namespace hosts; 0 once its sshd answers."""
    import time

    from ..testing.debian_image import vmhost_image_dir
    from .vmhost import VmHostError, start_vm_host

    try:
        image = vmhost_image_dir()
        started = time.monotonic()
        vm = start_vm_host(lab, image)
    except (VmHostError, RuntimeError) as exc:
        print(f"kvmnet: VM host: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    if as_json:
        print(json.dumps({"vm": {**asdict(vm), "up_seconds": round(took, 1)}}))
    else:
        print(f"{'vm':<6} {'(QEMU ' + vm.accelerator + ')':<18} {vm.address:<16} yes   "
              f"PID {vm.pid}, up in {took:.0f}s, console {vm.console_log}")  # fmt: skip
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = _lab(args).status()
    except LabNotUp as exc:
        print(f"kvmnet: {exc}", file=sys.stderr)
        return 3
    _print(status, args.json)
    return 0 if all(h.ssh_reachable for h in status.hosts) else 1


def cmd_down(args: argparse.Namespace) -> int:
    try:
        _lab(args).down()
    except LabError as exc:
        print(f"kvmnet: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from ..hostconfig import lab_stack_config, write_stack_config
    from ..testing.guest import guest_image_dir

    try:
        status = _lab(args).status(check_ssh=False)
        image = guest_image_dir() if args.test_image else None
        values = lab_stack_config(status, args.model, host=args.host, image_dir=image)
    except (LabError, KeyError, RuntimeError) as exc:
        print(f"kvmnet: {exc}", file=sys.stderr)
        return 1
    write_stack_config(args.file, values)
    print(f"{args.file}: set {', '.join(values)}")
    return 0
