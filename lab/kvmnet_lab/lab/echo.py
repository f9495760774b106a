"""TCP+UDP "who are you" echo service run on the lab's outside host (ext).

For every TCP connection or UDP datagram it replies with ``peer <ip> <port>\\n`` and appends
the same line to the log file (flushed per line), so a test can prove which source address
ext saw even when the reply never makes it back.

Run: ``python -m kvmnet_lab.lab.echo --bind ADDR --port 7777 --log FILE [--ready FILE]``
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .netns import exec_argv, pid_alive, pid_cmdline


class PeerLog:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the server

    def record(self, ip: str, port: int) -> bytes:
        line = f"peer {ip} {port}\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
        return line.encode()


def _serve_tcp(sock: socket.socket, log: PeerLog) -> None:
    while True:
        conn, peer = sock.accept()
        try:
            conn.settimeout(2.0)
            conn.sendall(log.record(peer[0], peer[1]))
        except OSError:
            pass
        finally:
            conn.close()


def _serve_udp(sock: socket.socket, log: PeerLog) -> None:
    while True:
        _data, peer = sock.recvfrom(65535)
        try:
            sock.sendto(log.record(peer[0], peer[1]), peer)
        except OSError:
            pass


def serve(bind: str, port: int, log_path: Path, ready: Path | None = None) -> None:
    log = PeerLog(log_path)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((bind, port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((bind, port))
    threads = [
        threading.Thread(target=_serve_tcp, args=(tcp, log), daemon=True),
        threading.Thread(target=_serve_udp, args=(udp, log), daemon=True),
    ]
    for t in threads:
        t.start()
    if ready is not None:
        tmp = ready.with_name(ready.name + ".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, ready)

    stop = threading.Event()

    def _on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop.wait(1.0):
        if not all(t.is_alive() for t in threads):
            break


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvmnet-echo", description=__doc__)
    parser.add_argument("--bind", required=True, help="address to listen on")
    parser.add_argument("--port", type=int, default=7777)
    parser.add_argument("--log", required=True, type=Path, help="append 'peer IP PORT' lines")
    parser.add_argument("--ready", type=Path, help="write our PID here once listening")
    args = parser.parse_args(argv)
    serve(args.bind, args.port, args.log, args.ready)
    return 0


# --- management from the lab (root namespace side) -----------------------------------
MODULE = "kvmnet_lab.lab.echo"


def running_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid) or not any(MODULE in part for part in pid_cmdline(pid)):
        return None
    return pid


def ensure_echo(ns: str, bind: str, port: int, log: Path, pidfile: Path, stderr_log: Path) -> int:
    """Start the echo service inside ns unless it already runs; wait until it listens."""
    pid = running_pid(pidfile)
    if pid is not None:
        return pid
    pidfile.unlink(missing_ok=True)
    log.touch()
    argv = [
        sys.executable, "-m", MODULE,
        "--bind", bind, "--port", str(port), "--log", str(log), "--ready", str(pidfile),
    ]  # fmt: skip
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    with open(stderr_log, "ab") as err:
        proc = subprocess.Popen(
            exec_argv(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = running_pid(pidfile)
        if pid is not None:
            return pid
        if proc.poll() is not None:
            raise RuntimeError(f"echo service in {ns} exited ({proc.returncode}); see {stderr_log}")
        time.sleep(0.05)
    raise TimeoutError(f"echo service in {ns} did not start listening; see {stderr_log}")


if __name__ == "__main__":
    sys.exit(main())
