"""network.verify: attach a short-lived probe to a network's bridge, check its model's row
from there, and take the probe away again, also on errors.

The probe is a new Python process (inside.py) in a namespace of its own, with one end of a
veth pair; the other end is a port of the bridge. Both names come from the network's owner
(checks.probe_links), so what a killed run left (the pair before its peer moved, or a probe
process still running) is found and removed by the next verify of that network. Once the
probe's process is gone its namespace goes, and with it the peer and so the whole pair.

After its checks, while the bridge probe still listens, a second probe stands for a neighbour
that routes the subnet via the host (outer.py): routed lets it in, NAT refuses it except at
each port forward, which conntrack on the host shows translated and let through.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...spec import dhcp, validate, verify, verify_probe
from ..errors import AgentError
from ..links.netlink import iproute_class
from . import blame, checks, outer, spawn
from . import inside as probe_inside

LINK_SCOPE = 253  # RT_SCOPE_LINK
CHECKS_TIMEOUT = 60.0
LISTEN_PORT = 9  # the bridge probe's listener, which the outside probe tries to reach


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
    forwards: tuple[dict[str, Any], ...] = ()  # NAT: the port forwards (verify.forwards)
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
            forwards=tuple(verify.forwards(args.get("forwards"))) if model == "nat" else (),
            skip=tuple(c for c in verify.CHECKS if c in (args.get("skip") or [])),
        )

    @property
    def inbound(self) -> bool:
        return verify.inbound_checked(self.model) and "inbound" not in self.skip

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
            "listen": LISTEN_PORT if self.inbound else None,
        }


def network_verify(args: dict[str, Any]) -> dict[str, Any]:
    spec = VerifySpec.from_args(args)
    host_end, peer = checks.probe_links(spec.owner)
    spawn.remove(host_end, peer)  # what a killed run left
    spawn.remove(*checks.outside_links(spec.owner))
    target = spec.target or default_gateway()
    inside = spec.inside(peer, target)
    had = link_locals(spec.bridge)
    way_in: dict[str, Any] = {}

    def from_outside() -> None:  # while the bridge probe listens
        inbound = (inside["address"], LISTEN_PORT) if spec.inbound else None
        forwards = [] if "forwards" in spec.skip else list(spec.forwards)
        if inbound or forwards:
            way_in["seen"], way_in["tracked"] = outer.try_the_way_in(
                spec.owner, inbound, forwards, verify.inbound_expected(spec.model)
            )

    try:
        seen = run_probe(spec, host_end, peer, inside, from_outside)
    finally:
        spawn.remove(host_end, peer)
        drop_link_locals(spec.bridge, keep=had)
    seen.update(way_in.get("seen") or {})
    outcomes = checks.judge(spec.model, seen, from_the_host(seen, inside))
    if "tracked" in way_in:
        outcomes += forwards_outcome(list(spec.forwards), way_in["tracked"])
    failed = [o for o in outcomes if not o.ok]
    blocked = blame.blocker(failed, spec.rules, spec.input_rules) if failed else None
    return {
        "passed": not failed,
        "checks": [o.to_wire() for o in outcomes],
        "blocked_by": blocked,
        "probe": {"address": inside["address"], "mac": inside["mac"]},
        "target": target,
    }


def forwards_outcome(
    forwards: list[dict[str, Any]], tracked: list[dict[str, object]] | None
) -> list[checks.Outcome]:
    if tracked is None:
        return [checks.Outcome("forwards", True, "not checked: conntrack unreadable", ran=False)]
    outcome = checks.judge_forwards(forwards, tracked)
    return [outcome] if outcome else []


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
    spec: VerifySpec,
    host_end: str,
    peer: str,
    inside: dict[str, Any],
    meanwhile: Callable[[], None],
) -> dict[str, dict[str, object]]:
    """What the bridge probe saw; `meanwhile` runs after its checks, while it still listens."""
    proc = spawn.start("inside", host_end)
    try:
        attach(spec.bridge, host_end, peer, proc.pid)
        seen = spawn.ask(proc, inside, CHECKS_TIMEOUT)
        meanwhile()
        return seen
    finally:
        spawn.end(proc)


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
