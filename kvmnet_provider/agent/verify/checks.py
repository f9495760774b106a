"""The probe's identity and the judgement of what it saw: pure functions, no kernel.

A probe is named after the network's owner, so a probe left by a killed run is found (and
removed) by the next verify of the same network, and never confused with another's.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from ...spec import verify

HOST_PREFIX = "kvp-"  # the veth end on the bridge
PEER_PREFIX = "kvq-"  # its peer, moved into the probe's namespace
OUTER_PREFIX = "kvo-"  # the outside probe's veth end on the host (an address, no bridge)
OUTER_PEER_PREFIX = "kvr-"  # its peer, in the outside probe's namespace
# The outside probe's link: a /30 of IPv4 link-local space (never routed beyond a link),
# without its first and last /24 (reserved), and one that no address or route of the host
# covers (a cloud's metadata route, another link-local user).
OUTER_SPACE = ipaddress.IPv4Network("169.254.0.0/16")
OUTER_PREFIXLEN = 30


@dataclass(frozen=True)
class Outcome:
    """One check: whether it matched the model, and why not (or what was seen)."""

    check: str
    ok: bool
    reason: str
    ran: bool = True  # False: it could prove nothing here (ok, but not a pass)

    def to_wire(self) -> dict[str, object]:
        return {"check": self.check, "ok": self.ok, "reason": self.reason, "ran": self.ran}


def _digest(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()


def probe_links(owner: str) -> tuple[str, str]:
    """The veth pair's names: host end, peer (15 characters at most, as the kernel wants)."""
    tag = _digest(owner)[:10]
    return HOST_PREFIX + tag, PEER_PREFIX + tag


def outside_links(owner: str) -> tuple[str, str]:
    """The outside probe's veth pair: host end, peer."""
    tag = _digest(owner)[:10]
    return OUTER_PREFIX + tag, OUTER_PEER_PREFIX + tag


def outside_link_net(owner: str, busy: list[str]) -> ipaddress.IPv4Network:
    """The outside probe's /30: the first from the owner's place in link-local space on that
    no network in `busy` (the host's addresses and non-default routes) overlaps."""
    nets = [ipaddress.ip_network(n, strict=False) for n in busy]
    used = [n for n in nets if n.version == 4 and n.prefixlen > 0]
    count = 2 ** (OUTER_PREFIXLEN - OUTER_SPACE.prefixlen)
    first, last = count // 256, count - count // 256  # skip 169.254.0.0/24 and .255.0/24
    start = int(_digest(owner)[20:28], 16) % (last - first)
    for step in range(last - first):
        index = first + (start + step) % (last - first)
        base = int(OUTER_SPACE.network_address) + index * 2 ** (32 - OUTER_PREFIXLEN)
        candidate = ipaddress.IPv4Network((base, OUTER_PREFIXLEN))
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise ValueError("no free link-local /30 for the outside probe")


def judge(
    model: str, seen: dict[str, dict[str, object]], host: dict[str, object] | None = None
) -> list[Outcome]:
    """Each check the probe ran, against what `model` promises. `seen` maps a check to
    {"reached": bool, "detail": str} (dns and dhcp: reached means answered); `host` is what
    the host itself saw of the outside target when the probe did not reach it."""
    out = []
    for check in verify.CHECKS:
        if check not in seen:
            continue
        reached = bool(seen[check].get("reached"))
        detail = str(seen[check].get("detail") or "")
        if check == "inbound":
            want = verify.inbound_expected(model)
        elif check == "outside":
            want = verify.outside_expected(model)
            if not reached and host is not None:
                if not host.get("reached"):  # nothing to tell a refusal from a dead target
                    why = f"the host itself gets no answer ({host.get('detail')}); set verifyTarget"
                    out.append(Outcome(check, True, f"not checked: {why}", ran=False))
                    continue
                detail += "; the host itself reaches it"
        else:  # the gateway, DNS and DHCP answer wherever they run
            want = True
        if reached == want:
            out.append(Outcome(check, True, detail))
        elif want:
            out.append(Outcome(check, False, f"expected an answer, got none ({detail})"))
        else:
            out.append(Outcome(check, False, f"reached, but a {model} network must not ({detail})"))
    return out


def judge_forwards(
    forwards: list[dict[str, object]], tracked: list[dict[str, object]]
) -> Outcome | None:
    """Whether each port forward took the outside probe's packet to its guest: `tracked` is
    what conntrack holds of the probe's packets to the host ({protocol, dport,
    reply_src, reply_sport}). A connection is only tracked once its first packet passed the
    host's last hook, so one whose reply comes from guest:port was translated (the DNAT rule)
    and let through (the FORWARD rules), whether the guest runs yet or not. None: no forwards."""
    if not forwards:
        return None
    good, bad, skipped = [], [], []
    for fwd in forwards:
        name = f"{fwd['protocol']}/{fwd['host_port']} -> {fwd['guest_address']}:{fwd['guest_port']}"
        if fwd.get("in_interface"):
            skipped.append(f"{name} (only from {fwd['in_interface']})")
            continue
        seen = [
            t
            for t in tracked
            if t.get("protocol") == fwd["protocol"] and t.get("dport") == fwd["host_port"]
        ]
        if any(
            t.get("reply_src") == fwd["guest_address"] and t.get("reply_sport") == fwd["guest_port"]
            for t in seen
        ):
            good.append(name)
        elif seen:
            went = f"{seen[0].get('reply_src')}:{seen[0].get('reply_sport')}"
            bad.append(f"{name}: not translated (it went to {went}); the DNAT rule did not match")
        else:
            bad.append(f"{name}: dropped on the host (nothing got past its FORWARD hook)")
    if bad:
        return Outcome("forwards", False, "; ".join(bad))
    if not good:
        return Outcome("forwards", True, f"not checked: {', '.join(skipped)}", ran=False)
    detail = f"{', '.join(good)} translated and let through"
    if skipped:
        detail += f"; not checked: {', '.join(skipped)}"
    return Outcome("forwards", True, detail)
