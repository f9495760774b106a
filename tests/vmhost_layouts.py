"""The VM host's NIC re-laid live the way real hosts have it, for the bridged model's takeover
tests on a kernel with bonding (the namespace lab's kernel has none).

Each change cuts the SSH session it is asked over, so it runs as a detached script on the VM
(started by `setsid -f`, a second after the session's command returned), and the test waits
for a new login to see it done. A script that cannot reach the gateway after its change puts
eth0 back as it found it, so a failed layout never strands the VM. `laid(host, "bond")` is a
context manager: the layout inside, eth0 exactly as cloud-init's ifupdown made it after.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass

import paramiko
from kvmnet_lab.lab.vmhost import VmHost
from vmhost_support import sh

BOND = "bond0"
LEFTOVER_BRIDGE = "kaup"  # the tests' bridge, should a failed destroy leave it
LOG = "/run/kvmnet-test-layout.log"


@dataclass(frozen=True)
class Plain:
    """eth0 as the distribution configured it: its IPv4 address and its own routes."""

    address: str  # with prefix
    gateway: str
    routes: tuple[str, ...]  # `ip -4 route show dev eth0` lines the kernel did not add


def plain_of(host: VmHost) -> Plain:
    found = sh(host, "ip -o -4 addr show dev eth0 | awk '{print $4}'").split()
    assert len(found) == 1, found
    routes = [
        line.strip()
        for line in sh(host, "ip -4 route show dev eth0").splitlines()
        if line.strip() and "proto kernel" not in line
    ]
    gateway = next(r.split()[2] for r in routes if r.startswith("default via "))
    return Plain(found[0], gateway, tuple(routes))


def _routes_on(plain: Plain, link: str) -> str:
    return "\n".join(f"ip route add {r} dev {link}" for r in plain.routes)


def _back_to_eth0(plain: Plain) -> str:
    """eth0 alone again, with its address and routes: what every layout undoes to."""
    return f"""
ip link del {LEFTOVER_BRIDGE} 2>/dev/null
ip link del {BOND} 2>/dev/null
ip link set eth0 down
ip addr flush dev eth0
ip link set eth0 up
ip addr add {plain.address} dev eth0
{_routes_on(plain, "eth0")}
"""


def bond_script(plain: Plain) -> str:
    """eth0 a bond's only port (active-backup); the bond takes eth0's MAC, address and routes."""
    return f"""
modprobe bonding max_bonds=0
ip link add {BOND} type bond mode active-backup miimon 100
ip link set eth0 down
ip addr flush dev eth0
ip link set eth0 master {BOND}
ip link set {BOND} up
ip addr add {plain.address} dev {BOND}
{_routes_on(plain, BOND)}
"""


# The image has no ping: a refused TCP connection (a reset) shows the gateway reachable.
REACHES = """
import socket, sys
try:
    socket.create_connection(("{}", 9), timeout=1).close()
except ConnectionRefusedError:
    pass
except OSError:
    sys.exit(1)
"""


def _detached(host: VmHost, change: str, plain: Plain) -> None:
    """Run `change` on the VM after this session ended; back to eth0 if it cuts the VM off."""
    body = f"""sleep 1
{change}
for i in 1 2 3 4 5 6 7 8 9 10; do
  python3 -c {shlex.quote(REACHES.format(plain.gateway))} && exit 0
  sleep 1
done
echo 'layout unreachable: eth0 back'
{_back_to_eth0(plain)}
"""
    sh(host, f"setsid -f sh -x -c {shlex.quote(body)} </dev/null >{LOG} 2>&1")


def wait_until(host: VmHost, command: str, expect: str, timeout: float = 180.0) -> str:
    """Over new logins, until `command`'s output holds `expect`; that output."""
    deadline, out = time.monotonic() + timeout, ""
    time.sleep(3.0)  # the detached script's own second, and its change
    while time.monotonic() < deadline:
        try:
            out = sh(host, command, timeout=20)
            if expect in out:
                return out
        except (OSError, EOFError, paramiko.SSHException, AssertionError):
            pass
        time.sleep(2.0)
    log = sh(host, f"cat {LOG} || true")
    raise AssertionError(f"{command}: no {expect!r} within {timeout:.0f}s: {out}\n{log}")


def lay(host: VmHost, plain: Plain, change: str, link: str, expect: str = "") -> None:
    _detached(host, change, plain)
    shown = wait_until(host, f"ip -o -4 addr show dev {link} 2>&1 || true", plain.address)
    if expect and expect not in shown:
        shown = wait_until(host, f"ip -o -4 addr show dev {link}", expect)


def unlay(host: VmHost, plain: Plain) -> None:
    _detached(host, _back_to_eth0(plain), plain)
    wait_until(host, "ip -o -4 addr show dev eth0", plain.address)


@contextlib.contextmanager
def laid(host: VmHost, plain: Plain, change: str, link: str, expect: str = "") -> Iterator[None]:
    try:
        lay(host, plain, change, link, expect)
        yield
    finally:
        unlay(host, plain)
