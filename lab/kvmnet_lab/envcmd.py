"""`kvmnet env`: the environment to run `pulumi` yourself, as the demo and the tests run it.

The engine built by `make toolchain` and this venv on PATH, the demo's file backend and
Pulumi home (no login, no access token), its passphrase, and no update checks or plugin
downloads. Printed as `export` lines for `eval`, or as a shell (`--shell`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .toolchain import DEMO_STATE_DIR, PulumiWorkspace, kvmnet_command


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = subparsers.add_parser(
        "env", help="print export lines (or open a shell) for running pulumi yourself"
    )
    env.add_argument("--shell", action="store_true", help="open $SHELL with them set")
    env.set_defaults(func=cmd_env)


def cmd_env(args: argparse.Namespace) -> int:
    settings = PulumiWorkspace(DEMO_STATE_DIR).settings()
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
