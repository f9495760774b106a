"""The probe's identity and the judgement of what it saw: pure functions, no kernel.

A probe is named after the network's owner, so a probe left by a killed run is found (and
removed) by the next verify of the same network, and never confused with another's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ...spec import verify

HOST_PREFIX = "kvp-"  # the veth end on the bridge
PEER_PREFIX = "kvq-"  # its peer, moved into the probe's namespace


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
        if check == "outside":
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
