"""The forward rules of one network, as data: what both firewall backends install.

Pure standard library (the controller and the unit tests import it too). After libvirt's
network driver: three sections evaluated in this order for every network on the host,
- cross (FWX): guest to guest on one bridge, accepted (with br_netfilter, bridged frames
  traverse FORWARD, so a DROP policy would otherwise cut guests apart);
- input (FWI): into the bridge from elsewhere: routed accepts the subnet, NAT only
  established/related traffic and the declared port forwards (DNAT'd), then REJECT;
- output (FWO): out of the bridge: routed and NAT accept the subnet, then REJECT;
and, for the nftables backend only, a "pass" section that sits in the host's own filter
table (where a DROP policy is) and accepts what the three sections above let through.
Every input section runs before every output section (one chain each), so traffic from
one network into another is judged by the receiving network first, as in libvirt.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from ...spec import masquerade, models, validate
from ...spec.family import IPV4, Family

MODES = models.MODEL_NAMES
SECTIONS = ("cross", "input", "output")
CT_ESTABLISHED = "established,related"
CT_DNAT = "dnat"
VERDICTS = ("accept", "reject", "drop")


@dataclass(frozen=True)
class Rule:
    """One rule with the few matches kvmnet uses; None means "any"."""

    verdict: str
    iif: str | None = None
    oif: str | None = None
    src: str | None = None  # CIDR
    dst: str | None = None  # CIDR
    proto: str | None = None
    dport: int | None = None
    ct: str | None = None  # CT_ESTABLISHED or CT_DNAT

    def to_wire(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def text(self) -> str:
        """iptables-style, for messages: `-i br0 -s 10.0.1.0/24 -j ACCEPT`."""
        parts = []
        for flag, value in (
            ("-i", self.iif),
            ("-o", self.oif),
            ("-s", self.src),
            ("-d", self.dst),
            ("-p", self.proto),
        ):
            if value:
                parts += [flag, str(value)]
        if self.dport:
            parts += ["--dport", str(self.dport)]
        if self.ct:
            parts += ["--ctstate", self.ct.upper()]
        parts += ["-j", self.verdict.upper()]
        return " ".join(parts)


@dataclass(frozen=True)
class Forward:
    """A declared port forward: DNAT'd traffic to guest:port that the input section admits."""

    guest: str
    port: int
    proto: str = "tcp"


@dataclass(frozen=True)
class NetworkRules:
    mode: str
    bridge: str
    subnet: str | None
    forwards: tuple[Forward, ...] = ()
    family: Family = IPV4

    @classmethod
    def from_spec(cls, spec: dict[str, object], family: Family = IPV4) -> NetworkRules:
        mode = spec.get("mode")
        if mode not in MODES:
            raise validate.InvalidInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        bridge = validate.ifname(spec.get("bridge"))
        subnet = spec.get("subnet")
        if mode in models.WITH_BRIDGE_ADDRESS:
            subnet = validate.network(subnet, family)
        else:
            subnet = None
        forwards = []
        raw_forwards = spec.get("forwards") or []
        if not isinstance(raw_forwards, list):
            raise validate.InvalidInput("forwards must be a list")
        for item in raw_forwards:
            if not isinstance(item, dict):
                raise validate.InvalidInput("each forward must be {guest, port, proto}")
            proto = item.get("proto", "tcp")
            if proto not in validate.PROTOCOLS:
                raise validate.InvalidInput(f"forward proto must be tcp or udp, got {proto!r}")
            guest = str(family.address(str(item.get("guest"))))
            forwards.append(Forward(guest, validate.port(item.get("port")), proto))
        if forwards and mode != "nat":
            raise validate.InvalidInput("forwards are for the nat mode only")
        forwards.sort(key=lambda f: (f.guest, f.proto, f.port))
        return cls(str(mode), bridge, subnet, tuple(forwards), family)

    def sections(self) -> dict[str, list[Rule]]:
        """The rules per section (cross, input, output), in order."""
        br, net, host = self.bridge, self.subnet, self.family.host
        cross = [Rule("accept", iif=br, oif=br)]
        if self.mode == "bridged":
            return {"cross": cross, "input": [], "output": []}
        if self.mode == "isolated":
            return {
                "cross": cross,
                "input": [Rule("reject", oif=br)],
                "output": [Rule("reject", iif=br)],
            }
        if self.mode == "routed":
            inbound = [Rule("accept", oif=br, dst=net)]
        else:
            inbound = [Rule("accept", oif=br, dst=net, ct=CT_ESTABLISHED)]
            inbound += [
                Rule("accept", oif=br, dst=host(f.guest), proto=f.proto, dport=f.port, ct=CT_DNAT)
                for f in self.forwards
            ]
        return {
            "cross": cross,
            "input": [*inbound, Rule("reject", oif=br)],
            "output": [Rule("accept", iif=br, src=net), Rule("reject", iif=br)],
        }

    def passes(self) -> list[Rule]:
        """Accepts for the host's own filter table, after the sections have rejected what the
        model refuses; kept to what iptables-nft can show (no conntrack, no reject)."""
        rules = [Rule("accept", iif=self.bridge, oif=self.bridge)]
        if self.mode in models.WITH_BRIDGE_ADDRESS:
            rules += [
                Rule("accept", iif=self.bridge, src=self.subnet),
                Rule("accept", oif=self.bridge, dst=self.subnet),
            ]
        return rules

    def refused_inbound(self) -> list[Rule]:
        """What the model refuses from a neighbour that routes the subnet via the host, as a
        match pattern (for finding what lets it in): NAT's new connections into the subnet."""
        if self.mode != "nat":
            return []
        return [Rule("accept", oif=self.bridge, dst=self.subnet)]

    def flows(self) -> list[Rule]:
        """The traffic the model lets through, as match patterns (for finding blockers)."""
        net = self.subnet
        flows = [Rule("accept", iif=self.bridge, oif=self.bridge, src=net, dst=net)]
        if self.mode in models.WITH_BRIDGE_ADDRESS:
            flows += [
                Rule("accept", iif=self.bridge, src=self.subnet),
                Rule("accept", oif=self.bridge, dst=self.subnet),
            ]
        return flows


def _covers(outer: str | None, inner: str | None) -> bool:
    if outer is None:
        return True
    if inner is None:
        return False
    inner_net, outer_net = (ipaddress.ip_network(n, strict=False) for n in (inner, outer))
    if inner_net.version != outer_net.version:  # another family's rule never matches
        return False
    return inner_net.subnet_of(outer_net)  # type: ignore[arg-type]


def could_block(rule: Rule | None, flows: list[Rule]) -> bool:
    """Whether a foreign DROP/REJECT rule drops ALL of some traffic this network lets through
    (e.g. `-j DROP`, `-i BR -j DROP`, `-d NET -j DROP`).

    A narrower rule (`-s 1.2.3.4 -j DROP`, a port, a mark, a negation, another module) is the
    operator's own targeted policy, not a blocker; `rule` is None for rules with matches
    kvmnet does not read."""
    if rule is None or rule.verdict not in ("drop", "reject"):
        return False
    if rule.proto or rule.dport or rule.ct:
        return False
    for flow in flows:
        if rule.iif is not None and rule.iif != flow.iif:
            continue
        if rule.oif is not None and rule.oif != flow.oif:
            continue
        if _covers(rule.src, flow.src) and _covers(rule.dst, flow.dst):
            return True
    return False


def could_admit(rule: Rule | None, refused: list[Rule]) -> bool:
    """Whether a foreign ACCEPT lets in ALL of some traffic this network refuses (e.g.
    `-j ACCEPT`, `-o BR -j ACCEPT`, `-d NET -j ACCEPT`). A rule limited to an interface the
    traffic arrives on, a protocol, a port or a connection state is the operator's own
    opening (or established traffic), not a leak of the model's."""
    if rule is None or rule.verdict != "accept":
        return False
    if rule.iif or rule.proto or rule.dport or rule.ct:
        return False
    for flow in refused:
        if rule.oif is not None and rule.oif != flow.oif:
            continue
        if _covers(rule.src, flow.src) and _covers(rule.dst, flow.dst):
            return True
    return False


def cidr(value: str | None) -> str | None:
    """`10.0.1.0/255.255.255.0` or `10.0.1.0/24` as CIDR; None for any (0.0.0.0/0)."""
    if value is None:
        return None
    net = ipaddress.ip_network(value, strict=False)
    return None if net.prefixlen == 0 else str(net)


def masquerade_want(
    spec: dict[str, Any], family: Family = IPV4
) -> tuple[str, list[dict[str, Any]]]:
    """(owner, the rules as read back, in order) of a masquerade.ensure request, for either
    backend: spec/masquerade.py's libvirt-like set."""
    source = validate.network(spec["source"], family)
    out_if = validate.ifname(spec["out_interface"]) if spec.get("out_interface") else None
    return validate.owner(spec["owner"]), masquerade.rules(source, out_if, family)


DST_LOCAL = validate.DNAT_DST_LOCAL  # `-m addrtype --dst-type LOCAL` / `fib daddr type local`


def dnat_want(spec: dict[str, Any], family: Family = IPV4) -> tuple[str, dict[str, Any]]:
    """(owner, the rule as read back) of a dnat.ensure request, for either backend.

    A port forward catches only packets addressed to the host itself (`dst_type` local, as
    Docker's DNAT does), so a guest's connection to some other machine's port passes through
    unchanged; an explicit `destination` (one of the host's addresses) narrows it instead."""
    protocol = spec.get("protocol", "tcp")
    if protocol not in validate.PROTOCOLS:
        raise validate.InvalidInput(f"protocol must be tcp or udp, got {protocol!r}")
    guest = str(family.address(str(spec["guest_address"])))
    guest_port = validate.port(spec["guest_port"])
    in_if = validate.ifname(spec["in_interface"]) if spec.get("in_interface") else None
    dst = str(family.address(str(spec["destination"]))) if spec.get("destination") else None
    want = {
        "protocol": protocol,
        "in_interface": in_if,
        "destination": dst,
        "dst_type": None if dst else DST_LOCAL,
        "host_port": validate.port(spec["host_port"]),
        "to": family.endpoint(guest, guest_port),
        "target": "DNAT",
    }
    return validate.owner(spec["owner"]), want


@dataclass(frozen=True)
class InputRules:
    """What a network's DHCP/DNS server (dnsmasq on the bridge) needs through the host's
    INPUT hook: DHCP requests arriving on the bridge (from 0.0.0.0 before a lease), and DNS
    over UDP and TCP from the guests' subnet to the bridge's address. Accepts only: what
    else reaches the host is the host's own policy."""

    bridge: str
    address: str
    subnet: str
    family: Family = IPV4

    @classmethod
    def from_spec(cls, spec: dict[str, object], family: Family = IPV4) -> InputRules:
        address = str(family.address(str(spec.get("address"))))
        subnet = validate.network(spec.get("subnet"), family)
        if family.address(address) not in ipaddress.ip_network(subnet):
            raise validate.InvalidInput(f"address {address} is not inside subnet {subnet}")
        return cls(validate.ifname(spec.get("bridge")), address, subnet, family)

    def rules(self) -> list[Rule]:
        br, net, dns = self.bridge, self.subnet, self.family.host(self.address)
        return [
            Rule("accept", iif=br, proto="udp", dport=self.family.dhcp_server_port),
            Rule("accept", iif=br, src=net, dst=dns, proto="udp", dport=53),
            Rule("accept", iif=br, src=net, dst=dns, proto="tcp", dport=53),
        ]

    def flows(self) -> list[Rule]:
        """The traffic the rules let in, as match patterns (for finding blockers): a DHCP
        request (from 0.0.0.0 to broadcast) and a guest's query to the bridge's address."""
        fam = self.family
        return [
            Rule("accept", iif=self.bridge, src=fam.dhcp_request_src, dst=fam.dhcp_request_dst),
            Rule("accept", iif=self.bridge, src=self.subnet, dst=self.family.host(self.address)),
        ]
