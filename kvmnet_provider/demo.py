"""`kvmnet demo up|down`: a lab KVM host plus one network model on it (registered by the CLI).

`demo up` brings up the lab (1 KVM host, unless the lab already has more), prints its hosts,
then hands over to :func:`run_model`; `demo down` calls :func:`destroy_model`, then takes the
lab down. Both are idempotent and fine when nothing is up.

The two seams, :func:`run_model` and :func:`destroy_model`, are where the network models plug
in (`pulumi up` / `pulumi destroy` of a model's stack); everything else here is lab plumbing.
"""

from __future__ import annotations

import argparse
import sys

from .lab import Lab, LabError, LabNotUp, LabStatus

MODELS = ("nat", "routed", "isolated", "bridged")
DEFAULT_MODEL = "nat"
DEMO_HOSTS = 1
TEARDOWN_HINT = "tear down with: make demo-down   (or: kvmnet demo down)"


# --- the seams ----------------------------------------------------------------------------
def run_model(model: str, lab_status: LabStatus) -> None:
    """Build network model `model` on the lab's hosts and show what the guests reach.

    Called by `demo up` once the lab is up and every host answers SSH. Must be idempotent
    (a second `demo up` converges) and raise on failure. Placeholder until the models exist.
    """
    print(f"model {model}: not available yet")


def destroy_model() -> None:
    """Remove whatever :func:`run_model` built; called by `demo down` before the lab goes.

    Must be idempotent and succeed when nothing was built or the lab is not up.
    Placeholder (no-op) until the models exist.
    """


# --- commands -----------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="a lab KVM host with one network model on it")
    sub = demo.add_subparsers(dest="demo_command", required=True, metavar="{up,down}")

    up = sub.add_parser("up", help="bring up the lab and a network model (idempotent)")
    up.add_argument(
        "--model",
        choices=MODELS,
        default=DEFAULT_MODEL,
        help=f"network model to build (default: {DEFAULT_MODEL})",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="destroy the model, then the lab (idempotent)")
    down.set_defaults(func=cmd_down)


def format_hosts(status: LabStatus) -> str:
    lines = [
        f"lab {status.name}  lan {status.lan}  state dir {status.state_dir}",
        "",
        f"{'HOST':<6} {'ADDRESS':<16} SSH REACHABLE",
    ]
    for h in status.hosts:
        lines.append(f"{h.name:<6} {h.address:<16} {'yes' if h.ssh_reachable else 'no'}")
    e = status.ext
    lines.append(f"{'ext':<6} {e.address:<16} {'-':<13} (outside host, echo :{e.echo_port})")
    return "\n".join(lines)


def _host_count(lab: Lab) -> int:
    """1 host for a new lab; an existing lab keeps its hosts (never shrink someone's lab)."""
    try:
        return max(DEMO_HOSTS, len(lab.status(check_ssh=False).hosts))
    except LabNotUp:
        return DEMO_HOSTS


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(args.name, args.state_dir)
    try:
        status = lab.up(hosts=_host_count(lab))
    except LabError as exc:
        print(f"kvmnet: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"kvmnet: lab up failed: {exc}\n{TEARDOWN_HINT}", file=sys.stderr)
        return 1
    print(format_hosts(status))
    print()
    if not all(h.ssh_reachable for h in status.hosts):
        print(f"kvmnet: SSH does not reach every lab host\n{TEARDOWN_HINT}", file=sys.stderr)
        return 1
    try:
        run_model(args.model, status)
    except Exception as exc:
        print(f"kvmnet: model {args.model} failed: {exc}\n{TEARDOWN_HINT}", file=sys.stderr)
        return 1
    print()
    print(TEARDOWN_HINT)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    try:
        destroy_model()
    except Exception as exc:
        print(f"kvmnet: destroying the model failed: {exc}", file=sys.stderr)
        return 1
    try:
        Lab(args.name, args.state_dir).down()
    except LabError as exc:
        print(f"kvmnet: {exc}", file=sys.stderr)
        return 1
    return 0
