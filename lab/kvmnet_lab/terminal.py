"""Attach this terminal to a UNIX-socket serial console (Ctrl-] detaches)."""

from __future__ import annotations

import os
import select
import socket
import sys
import termios
import tty

DETACH = b"\x1d"  # Ctrl-]


def attach_terminal(path: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        print(f"kvmnet: cannot open console {path}: {exc}", file=sys.stderr)
        return 1
    stdin = sys.stdin.fileno()
    interactive = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if interactive else None
    print(f"connected to {path}; Ctrl-] to leave", file=sys.stderr)
    try:
        if interactive:
            tty.setraw(stdin)
        sock.sendall(b"\n")
        while True:
            ready, _, _ = select.select([sock, stdin], [], [])
            if sock in ready:
                data = sock.recv(4096)
                if not data:
                    return 0
                os.write(sys.stdout.fileno(), data)
            if stdin in ready:
                data = os.read(stdin, 1024)
                if not data or DETACH in data:
                    return 0
                sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()
