"""Observe, from inside real guests and from the outside host, what a model lets through.

Used by `kvmnet demo` to show the table live and by the end-to-end tests to assert every
cell, "no" cells included. Evidence is gathered with tools the code under test does not
own: ping and nc inside the guest's busybox, tcpdump in the outside host's namespace.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .testing.console import GuestConsole

# What docs/DESIGN.md promises per model: guest->guest, ->bridge IP, ->host NIC, ->outside,
# outside->guest, and the source address the outside host sees ("host", "guest", None).
EXPECTED: dict[str, dict[str, object]] = {
    "isolated": {
        "guest": True,
        "bridge": None,
        "host": False,
        "outside": False,
        "inbound": False,
        "seen": None,
    },
    "routed": {
        "guest": True,
        "bridge": True,
        "host": True,
        "outside": False,
        "inbound": False,
        "seen": "guest",
    },
    "nat": {
        "guest": True,
        "bridge": True,
        "host": True,
        "outside": True,
        "inbound": False,
        "seen": "host",
    },
    "bridged": {
        "guest": True,
        "bridge": None,
        "host": True,
        "outside": True,
        "inbound": True,
        "seen": "guest",
    },
}
DESIGN_DOC = "docs/DESIGN.md (the reachability table)"
LEGEND = (
    '"-": nothing to test: the bridge has no address of its own (isolated), or carries the\n'
    "     host's LAN address, tested as guest->host NIC (bridged); under \"outside sees\": no\n"
    "     packet of the guest reached the outside host"
)
COLUMNS = ("guest", "bridge", "host", "outside", "inbound", "seen")
HEADERS = {
    "guest": "guest->guest",
    "bridge": "guest->bridge IP",
    "host": "guest->host NIC",
    "outside": "guest->outside",
    "inbound": "outside->guest",
    "seen": "outside sees",
}


@dataclass(frozen=True)
class GuestEndpoint:
    name: str
    address: str
    console: str


@dataclass(frozen=True)
class Outside:
    namespace: str
    address: str
    echo_port: int


@dataclass
class Observation:
    guest: bool
    bridge: bool | None
    host: bool
    outside: bool
    inbound: bool
    seen: str | None  # "guest", "host", another address, or None (nothing arrived)
    seen_address: str | None

    def as_dict(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in COLUMNS}


def ping(console: GuestConsole, address: str) -> bool:
    return console.run(f"ping -c 2 -W 2 {address}", timeout=30).status == 0


def in_namespace(namespace: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


def capture_sources(
    namespace: str, dst: str, action: Callable[[], object], seconds: float = 20
) -> list[str]:
    """Run `action` while tcpdump in `namespace` records sources of ICMP echo requests to dst."""
    argv = [
        "timeout",
        str(int(seconds)),
        "tcpdump",
        "-i",
        "eth0",
        "-n",
        "-l",
        "-q",
        "icmp[icmptype] == icmp-echo and dst host " + dst,
    ]
    proc = subprocess.Popen(
        in_namespace(namespace, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        assert proc.stderr is not None
        while time.monotonic() < deadline:  # tcpdump says so once its capture is open
            if "listening on" in proc.stderr.readline():
                break
        action()
    finally:
        time.sleep(0.5)  # let the last packet be printed before tcpdump is stopped
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    return sorted(set(re.findall(r"IP (\d+\.\d+\.\d+\.\d+) > ", out)))


def observe(
    guests: Sequence[GuestEndpoint],
    bridge_ip: str | None,
    host_ip: str,
    outside: Outside,
    ready_timeout: float = 90,
) -> Observation:
    """Probe every cell from the first guest (the second one is the peer)."""
    first, peer = guests[0], guests[1]
    with GuestConsole(first.console) as console:
        console.wait_ready(ready_timeout)
        with GuestConsole(peer.console) as other:
            other.wait_ready(ready_timeout)
        guest = ping(console, peer.address)
        bridge = ping(console, bridge_ip) if bridge_ip else None
        host = ping(console, host_ip)
        reached: list[bool] = []
        sources = capture_sources(
            outside.namespace,
            outside.address,
            lambda: reached.append(ping(console, outside.address)),
        )
    inbound = (
        subprocess.run(
            in_namespace(outside.namespace, ["ping", "-c", "2", "-W", "2", first.address]),
            capture_output=True,
        ).returncode
        == 0
    )
    seen_address = sources[0] if sources else None
    seen = {first.address: "guest", host_ip: "host"}.get(seen_address or "", seen_address)
    return Observation(
        guest, bridge, host, bool(reached and reached[0]), inbound, seen, seen_address
    )


def format_table(model: str, observed: Observation) -> str:
    expected = EXPECTED[model]
    rows = [f"{'':<10}" + "".join(f"{HEADERS[c]:<18}" for c in COLUMNS)]
    for label, values in (("observed", observed.as_dict()), ("expected", expected)):
        rows.append(f"{label:<10}" + "".join(f"{_cell(values[c]):<18}" for c in COLUMNS))
    verdict = "matches" if observed.as_dict() == expected else "DOES NOT MATCH"
    rows.append(LEGEND)
    rows.append(f"model {model}: observed {verdict} {DESIGN_DOC}")
    return "\n".join(rows)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)
