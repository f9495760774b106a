"""network.verify: attach a short-lived probe to a network's bridge, check its model's row
from there, and take the probe away again, also on errors.

The probe is a new Python process (inside.py) in a namespace of its own, with one end of a
veth pair; the other end is a port of the bridge. Both names come from the network's owner
(checks.probe_links), so what a killed run left (the pair before its peer moved, or a probe
process still running) is found and removed by the next verify of that network. Once the
probe's process is gone its namespace goes, and with it the peer and so the whole pair.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ...spec import dhcp, validate, verify, verify_probe
from ..errors import AgentError
from ..links.netlink import iproute_class
from . import blame, checks
from . import inside as probe_inside

LINK_SCOPE = 253  # RT_SCOPE_LINK
READY_TIMEOUT = 20.0
CHECKS_TIMEOUT = 60.0
# The probe's process: the agent's own sys.path (argv[1], JSON), then inside.main() of the
# module named in argv[2]; argv[3] names the probe and argv[4] the network namespace it was
# started from (argv[7] and argv[8] of its command line), so a later verify can find it.
BOOT = (
    "import importlib, json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "importlib.import_module(sys.argv[2]).main()"
)
INSIDE = __name__.rsplit(".", 1)[0] + ".inside"


@dataclass(frozen=True)
class VerifySpec:
    owner: str
    model: str
    bridge: str
    subnet: str
    gateway: str | None
    target: str | None  # None: the host's default gateway, by ICMP echo
    taken: tuple[str, ...]
    dhcp_range: tuple[str, ...] | None
    dns_name: str | None
    dns_address: str | None
    rules: dict[str, Any] | None  # forward.read's args for the network's ForwardRules
    input_rules: dict[str, Any] | None  # input.read's args for its DhcpServer's rules
    skip: tuple[str, ...] = ()  # checks not to run this time (see NetworkCheck's update)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> VerifySpec:
        model = args.get("model")
        if model not in verify.VERIFIABLE:
            raise validate.InvalidInput(f"model must be one of {', '.join(verify.VERIFIABLE)}")
        subnet = validate.network(args.get("subnet"))
        gateway = args.get("gateway")
        if verify.gateway_expected(str(model)):
            gateway = validate.ipv4_address(gateway)
        else:
            gateway = None
        taken = tuple(validate.ipv4_address(a) for a in args.get("taken") or [])
        rng = args.get("dhcp_range")
        dhcp_range = tuple(validate.ipv4_address(a) for a in rng) if rng else None
        name = args.get("dns_name")
        return cls(
            owner=validate.owner(args.get("owner")),
            model=str(model),
            bridge=validate.ifname(args.get("bridge")),
            subnet=subnet,
            gateway=gateway,
            target=verify.target(args["target"]) if args.get("target") else None,
            taken=taken,
            dhcp_range=dhcp_range,
            dns_name=dhcp.domain(name) if name and dhcp_range else None,
            dns_address=validate.ipv4_address(args["dns_address"])
            if name and args.get("dns_address")
            else None,
            rules=args.get("rules") if isinstance(args.get("rules"), dict) else None,
            input_rules=args.get("input_rules")
            if isinstance(args.get("input_rules"), dict)
            else None,
            skip=tuple(c for c in verify.CHECKS if c in (args.get("skip") or [])),
        )

    def inside(self, peer: str, target: str | None) -> dict[str, Any]:
        """What the probe's process needs: its link, MAC, address, route and checks."""
        taken = [*self.taken, *([self.gateway] if self.gateway else [])]
        address, port = verify.split_target(target) if target else (None, None)
        if "outside" in self.skip:
            address = port = None
        return {
            "peer": peer,
            "mac": verify_probe.probe_mac(self.bridge),  # reserved by the network's DHCP
            "address": verify_probe.probe_address(self.subnet, taken, list(self.dhcp_range or [])),
            "prefixlen": ipaddress.IPv4Network(self.subnet).prefixlen,
            "gateway": self.gateway,
            "target": address,
            "port": port,
            "dhcp": self.dhcp_range is not None and "dhcp" not in self.skip,
            "dns_name": self.dns_name if "dns" not in self.skip else None,
            "dns_address": self.dns_address,
        }


def network_verify(args: dict[str, Any]) -> dict[str, Any]:
    spec = VerifySpec.from_args(args)
    host_end, peer = checks.probe_links(spec.owner)
    remove_probe(host_end, peer)  # what a killed run left
    target = spec.target or default_gateway()
    inside = spec.inside(peer, target)
    had = link_locals(spec.bridge)
    try:
        seen = run_probe(spec, host_end, peer, inside)
    finally:
        remove_probe(host_end, peer)
        drop_link_locals(spec.bridge, keep=had)
    outcomes = checks.judge(spec.model, seen, from_the_host(seen, inside))
    failed = [o for o in outcomes if not o.ok]
    blocked = blame.blocker(failed, spec.rules, spec.input_rules) if failed else None
    return {
        "passed": not failed,
        "checks": [o.to_wire() for o in outcomes],
        "blocked_by": blocked,
        "probe": {"address": inside["address"], "mac": inside["mac"]},
        "target": target,
    }


def from_the_host(
    seen: dict[str, dict[str, object]], inside: dict[str, Any]
) -> dict[str, object] | None:
    """The outside target tried from the host itself, when the probe did not reach it: a
    target the host cannot reach either proves no refusal and no cut."""
    if "outside" not in seen or seen["outside"].get("reached"):
        return None
    address, port = inside["target"], inside.get("port")
    return probe_inside.connect(address, port) if port else probe_inside.ping(address)


def default_gateway() -> str | None:
    """The host's IPv4 default gateway (the outside target when none is given)."""
    ipr = iproute_class()()
    try:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway:
                return str(gateway)
    finally:
        ipr.close()
    return None


def run_probe(
    spec: VerifySpec, host_end: str, peer: str, inside: dict[str, Any]
) -> dict[str, dict[str, object]]:
    # The agent's tree first (wherever it was unpacked), then what the agent itself imports.
    path = [str(Path(__file__).resolve().parents[3]), *sys.path]
    argv = [sys.executable, "-I", "-S", "-c", BOOT, json.dumps(path), INSIDE, host_end,
            home_namespace()]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if _line(proc, proc.stdout, READY_TIMEOUT) != "ready":
            raise _probe_failed(proc, "did not start")
        attach(spec.bridge, host_end, peer, proc.pid)
        proc.stdin.write(json.dumps(inside) + "\n")
        proc.stdin.flush()
        answer = _line(proc, proc.stdout, CHECKS_TIMEOUT)
        if not answer:
            raise _probe_failed(proc, "ended without an answer")
        seen: dict[str, dict[str, object]] = json.loads(answer)
        return seen
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _line(proc: subprocess.Popen[str], stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        proc.kill()
        raise AgentError("failed", f"the verify probe gave no answer in {timeout:g}s")
    return stream.readline().strip()


def _probe_failed(proc: subprocess.Popen[str], what: str) -> AgentError:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
    return AgentError("failed", f"the verify probe {what}: {err[-1] if err else 'no error'}")


def attach(bridge: str, host_end: str, peer: str, pid: int) -> None:
    """The veth pair: its peer into the probe's namespace, its host end a port of `bridge`."""
    ipr = iproute_class()()
    try:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            raise AgentError("failed", f"bridge {bridge} does not exist")
        ipr.link("add", ifname=host_end, kind="veth", peer=peer)
        (peer_idx,) = ipr.link_lookup(ifname=peer)
        ipr.link("set", index=peer_idx, net_ns_pid=pid)
        (idx,) = ipr.link_lookup(ifname=host_end)
        ipr.link("set", index=idx, master=found[0], state="up")
    finally:
        ipr.close()


def remove_probe(host_end: str, peer: str) -> None:
    """The probe of this network, whatever is left of it: its process, then its links."""
    for pid in _probe_processes(host_end):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ipr = iproute_class()()
    try:
        for name in (host_end, peer):
            for idx in ipr.link_lookup(ifname=name):
                with contextlib.suppress(Exception):  # gone with its pair meanwhile
                    ipr.link("del", index=idx)
    finally:
        ipr.close()
    deadline = time.monotonic() + 5
    while _probe_processes(host_end) and time.monotonic() < deadline:
        time.sleep(0.05)


def link_locals(bridge: str) -> set[tuple[str, int]]:
    """The bridge's IPv6 link-local addresses (address, prefix length)."""
    ipr = iproute_class()()
    try:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return set()
        return {
            (msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])
            for msg in ipr.get_addr(index=found[0], family=socket.AF_INET6)
            if msg["scope"] == LINK_SCOPE
        }
    finally:
        ipr.close()


def drop_link_locals(bridge: str, keep: set[tuple[str, int]]) -> None:
    """A bridge without ports has no carrier, and no IPv6 link-local address: the probe's port
    gave it both. The carrier goes with the port; the address the kernel added goes here, so
    the probe leaves the bridge as it found it (the kernel adds it again with the next port)."""
    added = link_locals(bridge) - keep
    if not added:
        return
    ipr = iproute_class()()
    try:
        for idx in ipr.link_lookup(ifname=bridge):
            for address, prefixlen in sorted(added):
                with contextlib.suppress(Exception):  # gone meanwhile
                    ipr.addr("del", index=idx, address=address, prefixlen=prefixlen)
    finally:
        ipr.close()


def home_namespace() -> str:
    """This process's network namespace (its inode), where the probes it starts come from."""
    return str(os.stat("/proc/self/ns/net").st_ino)


def _probe_processes(host_end: str) -> list[int]:
    """Probe processes of this network: their command line is BOOT's, with its name and this
    namespace. Not another namespace's: network namespaces share one PID space, and a network
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
        if len(argv) >= 9 and argv[4] == BOOT.encode() and argv[7:9] == [host_end.encode(), home]:
            found.append(int(entry.name))
    return found
