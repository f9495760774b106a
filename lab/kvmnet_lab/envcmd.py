"""`kvmnet env`: the environment to run `pulumi` yourself, as the demo and the tests run it.

The engine built by `make toolchain` and this venv on PATH, the demo's file backend and
Pulumi home (no login, no access token), its passphrase, and no update checks or plugin
downloads. Printed as `export` lines for `eval`, or as a shell (`--shell`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from .toolchain import DEMO_STATE_DIR, PulumiWorkspace, kvmnet_command


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = subparsers.add_parser(
        "env", help="print export lines (or open a shell) for running pulumi yourself"
    )
    env.add_argument("--shell", action="store_true", help="open $SHELL with them set")
    env.add_argument(
        "--venv",
        type=venv_dir,
        help="the venv that runs your own project's program and kvmnet's provider "
        "(it holds kvmnet, installed with pip); default: this checkout's",
    )
    env.set_defaults(func=cmd_env)


def venv_dir(raw: str) -> Path:
    """A venv with kvmnet in it: checked here, not at the first `pulumi up`."""
    venv = Path(raw).expanduser().resolve()
    if not (venv / "bin" / "python3").exists():
        raise argparse.ArgumentTypeError(f"{raw}: not a venv (no bin/python3 in it)")
    found = subprocess.run(
        [str(venv / "bin" / "python3"), "-c", "import kvmnet_provider, pulumi"],
        capture_output=True,
        cwd="/",  # not this checkout: its packages would be found from here
    )
    if found.returncode != 0:
        raise argparse.ArgumentTypeError(
            f"{raw}: kvmnet is not installed in it (pip install <this checkout> there)"
        )
    return venv


def cmd_env(args: argparse.Namespace) -> int:
    settings = PulumiWorkspace(DEMO_STATE_DIR, venv=args.venv).settings()
    if not args.shell:
        print(f'# eval "$({kvmnet_command()} env)"   then: pulumi stack ls, pulumi preview ...')
        for key, value in settings.items():
            print(f"export {key}={shlex.quote(value)}")
        print("unset VIRTUAL_ENV")
        return 0
    shell = os.environ.get("SHELL") or "/bin/bash"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(settings)
    print(f"kvmnet env: {shell} with pulumi, the venv and the demo's backend; exit to leave",
          file=sys.stderr)
    os.execvpe(shell, [shell], env)
