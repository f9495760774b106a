"""A probe's process: started as a new Python (never a fork of the threaded agent), asked
by JSON lines, found again by name when a killed run left it, and ended."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from ..errors import AgentError
from ..links.netlink import iproute_class

READY_TIMEOUT = 20.0
# The probe's process: the agent's own sys.path (argv[1], JSON), then main() of the module
# named in argv[2]; argv[3] names the probe and argv[4] the network namespace it was started
# from (argv[7] and argv[8] of its command line), so a later verify on this host finds it.
BOOT = (
    "import importlib, json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "importlib.import_module(sys.argv[2]).main()"
)
PACKAGE = __name__.rsplit(".", 1)[0]


def start(module: str, name: str) -> subprocess.Popen[str]:
    """The probe process of `module` (in this package), named `name`, once it said `ready`
    (in a namespace of its own by then)."""
    # The agent's tree first (wherever it was unpacked), then what the agent itself imports.
    path = [str(Path(__file__).resolve().parents[3]), *sys.path]
    argv = [sys.executable, "-I", "-S", "-c", BOOT, json.dumps(path), f"{PACKAGE}.{module}"]
    argv += [name, home_namespace()]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        if line(proc, READY_TIMEOUT) != "ready":
            raise failed(proc, "did not start")
    except BaseException:
        end(proc)
        raise
    return proc


def ask(
    proc: subprocess.Popen[str], spec: dict[str, object], timeout: float
) -> dict[str, dict[str, object]]:
    """Send the probe its spec; what it saw."""
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec) + "\n")
    proc.stdin.flush()
    answer = line(proc, timeout)
    if not answer:
        raise failed(proc, "ended without an answer")
    seen: dict[str, dict[str, object]] = json.loads(answer)
    return seen


def line(proc: subprocess.Popen[str], timeout: float) -> str:
    stream: IO[str] | None = proc.stdout
    assert stream is not None
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        proc.kill()
        raise AgentError("failed", f"the verify probe gave no answer in {timeout:g}s")
    return stream.readline().strip()


def failed(proc: subprocess.Popen[str], what: str) -> AgentError:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
    why = err[-1] if err else f"no error, exit status {proc.returncode}"
    name = os.fsdecode(proc.args[7]) if isinstance(proc.args, list) else "?"
    return AgentError("failed", f"the verify probe {name} {what}: {why}")


def end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def kill_named(name: str) -> None:
    """Probe processes a killed run left, by name (wait_gone waits for them)."""
    for pid in processes(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(name: str) -> None:
    deadline = time.monotonic() + 5
    while processes(name) and time.monotonic() < deadline:
        time.sleep(0.05)


def home_namespace() -> str:
    """This process's network namespace (its inode), where the probes it starts come from."""
    return str(os.stat("/proc/self/ns/net").st_ino)


def processes(name: str) -> list[int]:
    """Probe processes named `name`: their command line is BOOT's, with the name and this
    namespace. Not another namespace's: network namespaces share one PID space, and a probe
    of the same name there is another host's (a lab host, a container)."""
    home = home_namespace().encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 9 and argv[4] == BOOT.encode() and argv[7:9] == [name.encode(), home]:
            found.append(int(entry.name))
    return found


def remove(host_end: str, peer: str) -> None:
    """A probe, whatever is left of it: its process (by name), then its veth pair."""
    kill_named(host_end)
    ipr = iproute_class()()
    try:
        for name in (host_end, peer):
            for idx in ipr.link_lookup(ifname=name):
                with contextlib.suppress(Exception):  # gone with its pair meanwhile
                    ipr.link("del", index=idx)
    finally:
        ipr.close()
    wait_gone(host_end)
