"""`kvmnet demo up|down`: a lab KVM host plus one network model on it (registered by the CLI).

`demo up` brings up the lab (1 KVM host, unless the lab already has more), prints its hosts,
then hands over to :func:`run_model`; `demo down` calls :func:`destroy_model`, then takes the
lab down. Both are idempotent and fine when nothing is up.

The two seams, :func:`run_model` and :func:`destroy_model`, are where the network models plug
in (`pulumi up` / `pulumi destroy` of a model's stack); everything else here is lab plumbing.

The demo's stacks run in a project of their own under the demo's state dir: the tracked
`stacks/Pulumi.lab-<model>.yaml` are templates, copied there and completed with the lab
host's connection and the test image's paths; a demo never writes to them. The project is
named DEMO_PROJECT, not the repository's `kvmnet`: the backend is shared, and under the
repository's name `pulumi stack ls` in the repository listed the demo's stacks, whose
commands there then read (and salted) the tracked templates.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from kvmnet_provider.spec.models import MODEL_NAMES

from .fleetprobe import fleet_guests, format_fleet, observe_fleet
from .hostconfig import fleet_stack_config, lab_stack_config, write_stack_config
from .lab import Lab, LabError, LabNotUp, LabStatus
from .lab.commands import lab_up_or_say_why
from .probe import GuestEndpoint, Outside, format_table, in_namespace, observe
from .terminal import attach_terminal
from .testing.console import GuestConsole
from .testing.guest import guest_image_dir
from .toolchain import DEMO_STATE_DIR, REPO_ROOT, PulumiWorkspace, kvmnet_command

MODELS = (*MODEL_NAMES, "fleet")  # a fleet: several lab hosts, several models
DEFAULT_MODEL = "nat"
DEMO_HOSTS = 1
FLEET_HOSTS = 3  # stacks/Pulumi.lab-fleet.yaml puts networks on h1, h2 and h3
TEARDOWN_HINT = "tear down with: make demo-down (or: kvmnet demo down)"
DEMO_PROJECT = "kvmnet-demo"


# --- the seams ----------------------------------------------------------------------------
STATE_DIR = DEMO_STATE_DIR
ACTIVE_FILE = STATE_DIR / "demo-stack"
PROJECT_DIR = STATE_DIR / "project"  # the demo's own copy of the project (see the docstring)
TEMPLATES = REPO_ROOT / "stacks"
SUMMARY_START = ("Outputs:", "Resources:")


def _workspace() -> PulumiWorkspace:
    return PulumiWorkspace(STATE_DIR)


def prepare_project(stack: str, lab_status: LabStatus, model: str) -> Path:
    """The demo's project dir with the stack's config: the template plus the lab's host."""
    PROJECT_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "__main__.py", PROJECT_DIR / "__main__.py")
    (PROJECT_DIR / "Pulumi.yaml").write_text(
        f"name: {DEMO_PROJECT}\n"
        "description: kvmnet's demo stacks (copied from stacks/ by `kvmnet demo up`)\n"
        "runtime:\n  name: python\n  options:\n    toolchain: pip\n"
    )
    config = PROJECT_DIR / f"Pulumi.{stack}.yaml"
    shutil.copyfile(TEMPLATES / f"Pulumi.{stack}.yaml", config)
    if model == "fleet":
        template = yaml.safe_load(config.read_text())["config"]["kvmnet:hosts"]
        values = fleet_stack_config(lab_status, template, image_dir=guest_image_dir())
    else:
        values = lab_stack_config(lab_status, model, image_dir=guest_image_dir())
    write_stack_config(config, values)
    return PROJECT_DIR


def summary(output: str) -> str:
    """The end of `pulumi up`'s output from its Outputs/Resources section on, whole lines."""
    lines = output.rstrip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(SUMMARY_START)), 0)
    return "\n".join(lines[start:])


def run_model(model: str, lab_status: LabStatus) -> None:
    """`pulumi up` of stack lab-<model> on the lab's host h1, then show what guests reach.

    A demo runs one model at a time: another model's demo stack is destroyed first, since
    both would claim the same bridge on the same host.
    """
    stack = f"lab-{model}"
    ws = _workspace()
    active = ACTIVE_FILE.read_text().strip() if ACTIVE_FILE.exists() else None
    if active and active != stack:
        print(f"destroying the previous demo stack {active} first")
        destroy_model()
    project = prepare_project(stack, lab_status, model)
    ws.run(["stack", "select", "--create", stack], project)
    ACTIVE_FILE.write_text(stack)
    print(f"pulumi up --stack {stack}  (project {project}, state in {STATE_DIR})")
    up = ws.run(["up", "--yes", "--stack", stack], project)
    print(summary(up.stdout))
    outs = ws.outputs(project, stack)
    if model == "fleet":
        print("probing from inside each host's guests (ping, tcpdump in ext)...")
        print(format_fleet(observe_fleet(outs, lab_status), lab_status))
        print()
        for name in fleet_guests(outs):
            print(f"console of {name}: {kvmnet_command()} demo console {name}   (Ctrl-] to leave)")
        return
    guests = outs["guests"]
    assert isinstance(guests, dict)
    endpoints = [
        GuestEndpoint(name, str(g["address"]), str(g["console"])) for name, g in guests.items()
    ]
    # Isolated: no address; bridged: the bridge carries the host's own (probed as "host").
    addresses = outs.get("bridge_addresses") or []
    assert isinstance(addresses, list)
    bridge_ip = str(addresses[0]).split("/")[0] if addresses else None
    host = lab_status.hosts[0]
    ext = lab_status.ext
    print("probing from inside the guests (ping, tcpdump in ext)...")
    observed = observe(
        endpoints, bridge_ip, host.address, Outside(ext.namespace, ext.address, ext.echo_port)
    )
    print(format_table(model, observed))
    forwards = outs.get("port_forwards") or []
    assert isinstance(forwards, list)
    for forward in forwards:
        print(show_port_forward(forward, endpoints, host.address, ext.namespace))
    print()
    kvmnet = kvmnet_command()
    for e in endpoints:
        print(
            f"console of {e.name} ({e.address}): {kvmnet} demo console {e.name}   (Ctrl-] to leave)"
        )


def show_port_forward(
    forward: dict[str, object], guests: list[GuestEndpoint], host_address: str, outside_ns: str
) -> str:
    """Serve the guest's name on its forwarded port; ask for it from the outside host."""
    guest = next(g for g in guests if g.name == forward["guest"])
    port = int(str(forward["guest_port"]))
    with GuestConsole(guest.console) as console:
        console.run(f"nc -ll -p {port} -e /bin/hostname >/dev/null 2>&1 &")
        console.run(
            f"for i in $(seq 50); do netstat -ltn | grep -q :{port} && break; sleep 0.2; done"
        )
    got = subprocess.run(
        in_namespace(
            outside_ns, ["busybox", "nc", "-w", "3", host_address, str(forward["host_port"])]
        ),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    ).stdout.strip()
    verdict = "reached" if got == guest.name else "NOT reached"
    return (
        f"port forward {host_address}:{forward['host_port']} -> {guest.name}:{port}: "
        f"outside host {verdict} {guest.name} (it answered {got!r})"
    )


def destroy_model() -> None:
    """`pulumi destroy` of the active demo stack; nothing to do when none is active."""
    if not ACTIVE_FILE.exists():
        return
    stack = ACTIVE_FILE.read_text().strip()
    ws = _workspace()
    project = PROJECT_DIR if (PROJECT_DIR / "Pulumi.yaml").exists() else REPO_ROOT
    print(f"pulumi destroy --stack {stack}")
    ws.run(["destroy", "--yes", "--stack", stack], project)
    ws.run(["stack", "rm", "--yes", "--preserve-config", "--stack", stack], project, check=False)
    ACTIVE_FILE.unlink()


def console(guest: str) -> int:
    """Attach the terminal to a demo guest's serial console."""
    if not ACTIVE_FILE.exists():
        print("kvmnet: no demo is up (make demo)", file=sys.stderr)
        return 1
    stack = ACTIVE_FILE.read_text().strip()
    project = PROJECT_DIR if (PROJECT_DIR / "Pulumi.yaml").exists() else REPO_ROOT
    outs = _workspace().outputs(project, stack)
    guests = outs.get("guests") or fleet_guests(outs)  # a fleet's: host/guest
    assert isinstance(guests, dict)
    if guest not in guests:
        print(f"kvmnet: no guest {guest!r}; guests: {', '.join(guests)}", file=sys.stderr)
        return 1
    return attach_terminal(str(guests[guest]["console"]))


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

    attach = sub.add_parser("console", help="attach to a demo guest's serial console")
    attach.add_argument("guest", help="guest name, e.g. g1 (fleet: host/guest, e.g. h2/g1)")
    attach.set_defaults(func=lambda a: console(a.guest))


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


def _host_count(lab: Lab, needed: int = DEMO_HOSTS) -> int:
    """`needed` hosts for a new lab; an existing lab keeps its hosts (never shrink someone's
    lab) and grows to `needed`."""
    try:
        return max(needed, len(lab.status(check_ssh=False).hosts))
    except LabNotUp:
        return needed


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(args.name, args.state_dir)
    needed = FLEET_HOSTS if args.model == "fleet" else DEMO_HOSTS
    status = lab_up_or_say_why(lab, _host_count(lab, needed), TEARDOWN_HINT)
    if status is None:
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
