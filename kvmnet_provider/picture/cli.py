"""`kvmnet-picture`: draw a kvmnet stack from its state, as SVG or as a tree for terminals.

    kvmnet-picture [--state FILE|-] [--cwd DIR] [--stack NAME] [--live] [--format text|svg]
                   [-o FILE]

The state is a `pulumi stack export` document: from a file (`-` for stdin), or, without
--state, from running `pulumi stack export` in --cwd (default: here). With --live each
resource is also read on its host as `pulumi refresh` reads it, and what is gone or differs
is marked as drift (exit status 2 when there is any); a stack read through `pulumi` also
lends its secret SSH credentials (kvmnet:sshPrivateKey, ...) to those reads, in memory only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import errors
from .live import read_live
from .state import StateError, picture_from_export
from .svg import render_svg
from .text import render_text

EXIT_DRIFT = 2
PULUMI_TIMEOUT = 120
SECRET_KEYS = ("kvmnet:sshPrivateKey", "kvmnet:sshPassword", "kvmnet:sshCredentials")


class PictureError(Exception):
    """A failure the operator can act on: printed as one line."""


def _pulumi(args: list[str], cwd: Path, stack: str | None) -> str:
    argv = ["pulumi", *args, *(["--stack", stack] if stack else [])]
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=PULUMI_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise PictureError("pulumi is not on PATH; give the state with --state FILE") from None
    except subprocess.TimeoutExpired:
        raise PictureError(f"`pulumi {args[0]}` in {cwd} took over {PULUMI_TIMEOUT} s") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise PictureError(f"`{' '.join(argv)}` in {cwd} failed: {said}")
    return done.stdout


def read_export(state: str | None, cwd: Path, stack: str | None) -> dict[str, Any]:
    if state == "-":
        text, where = sys.stdin.read(), "stdin"
    elif state is not None:
        try:
            text, where = Path(state).read_text(), state
        except OSError as exc:
            raise PictureError(f"cannot read {state}: {exc.strerror}") from None
    else:
        text, where = _pulumi(["stack", "export"], cwd, stack), "`pulumi stack export`"
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise PictureError(
            f"{where} is not JSON ({exc}); give `pulumi stack export`'s output"
        ) from None
    if not isinstance(found, dict):
        raise PictureError(f"{where} is not a `pulumi stack export` document")
    return found


def lend_credentials(cwd: Path, stack: str | None) -> None:
    """The stack's secret SSH credentials, for the live reads, as the provider's `configure`
    takes them; held in this process's memory only, never printed."""
    from ..connection import credentials

    config = json.loads(_pulumi(["config", "--json", "--show-secrets"], cwd, stack) or "{}")

    def value(key: str) -> str | None:
        entry = config.get(key)
        return str(entry["value"]) if isinstance(entry, dict) and "value" in entry else None

    credentials.configure(*(value(k) for k in SECRET_KEYS))
    credentials.configure_hosts(value("kvmnet:hosts"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kvmnet-picture",
        description="Draw a kvmnet stack (hosts, bridges, taps, guests, uplinks, port "
        "forwards, DHCP) from its state, optionally marking drift found by live reads.",
    )
    parser.add_argument("--state", help="a `pulumi stack export` JSON file, or - for stdin")
    parser.add_argument(
        "--cwd",
        type=Path,
        default=Path("."),
        help="the Pulumi project to run `pulumi stack export` in (no --state)",
    )
    parser.add_argument("--stack", help="the stack, when not the selected one")
    parser.add_argument(
        "--live", action="store_true", help="read every resource on its host and mark the drift"
    )
    parser.add_argument(
        "--format",
        choices=("text", "svg"),
        help="default: svg when -o names a .svg file, else text",
    )
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    return parser.parse_args(argv)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    picture = picture_from_export(read_export(args.state, args.cwd, args.stack))
    if args.live:
        if args.state is None:
            lend_credentials(args.cwd, args.stack)
        read_live(picture)
    fmt = args.format or ("svg" if str(args.output or "").endswith(".svg") else "text")
    drawn = render_svg(picture) if fmt == "svg" else render_text(picture)
    if args.output:
        Path(args.output).write_text(drawn)
    else:
        sys.stdout.write(drawn)
    drifted = picture.drifted() or any(h.unreadable for h in picture.hosts)
    return EXIT_DRIFT if picture.live and drifted else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (PictureError, StateError) as exc:
        print(f"kvmnet-picture: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not errors.is_expected(exc):
            raise
        print(f"kvmnet-picture: {errors.one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
