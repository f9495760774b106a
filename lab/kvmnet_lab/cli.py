"""Console script `kvmnet`. Thin: each command group registers its own subparsers."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import demo, envcmd
from .lab import commands as lab_commands
from .lab.core import default_name

#: command groups: each adds its parser(s) and sets `func` (args -> exit code)
REGISTRARS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    lab_commands.register,
    demo.register,
    envcmd.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvmnet", description="kvmnet command line")
    parser.add_argument(
        "--name",
        default=None,
        help="lab name (default: $KVMNET_LAB_NAME or 'kvmnet')",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="lab state directory (default: $KVMNET_LAB_DIR or /run/kvmnet-lab/<name>)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.name = args.name or default_name()
    if args.state_dir is None:
        env = os.environ.get("KVMNET_LAB_DIR")
        args.state_dir = Path(env) if env else Path("/run/kvmnet-lab") / args.name
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
