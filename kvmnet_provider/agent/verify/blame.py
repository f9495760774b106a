"""Which rule stopped a failed check: asked of the firewall room, which already judges foreign
DROP/REJECT rules that run before kvmnet's jump (plan.could_block, each backend's blockers).
Nothing is judged here twice: this only picks the checks' rules to read and the first name."""

from __future__ import annotations

import contextlib
from typing import Any

from ...spec.verify import FIREWALLD_BLAME
from ..firewall import backend
from .checks import Outcome

BLOCKED = "blocked by "
# What each check's traffic crosses: the host's FORWARD hook (guests to the outside) or its
# INPUT hook (the bridge's own address: ping, DNS, DHCP).
HOOK = {"outside": "forward", "inbound": "forward", "forwards": "forward", "gateway": "input",
        "dns": "input", "dhcp": "input"}  # fmt: skip


def blocker(
    failed: list[Outcome], rules: dict[str, Any] | None, input_rules: dict[str, Any] | None
) -> str | None:
    """The first foreign rule that drops a failed check's traffic, as the firewall names it;
    for a refusal that failed (a leak), what the firewall finds wrong with kvmnet's own rules
    (its jump missing, rules changed); None when it names nothing."""
    ops = backend.handlers()
    for outcome in failed:
        hook = HOOK.get(outcome.check)
        args = rules if hook == "forward" else input_rules if hook == "input" else None
        leak = "must not" in outcome.reason
        if not args or (leak and outcome.check == "outside"):
            continue
        with contextlib.suppress(Exception):  # a read that fails names nothing
            if leak and hook == "forward":
                admitted = ops["forward.admitters"](dict(args)).get("admitted_by") or []
                if admitted:
                    return f"let in by {admitted[0]}"
            read = ops[f"{hook}.read"](dict(args))
            for problem in read.get("problems") or []:
                if leak and not problem.startswith(BLOCKED):
                    return f"{problem} (kvmnet's refusal does not run)"
                if not leak and problem.startswith(BLOCKED):
                    return problem[len(BLOCKED) :]
            if leak:
                continue
            if hook == "forward":
                other = backend.other_backend_drop(read.get("backend") or "iptables")
                if other:
                    return f"{other} (a DROP policy kvmnet's rules cannot pass)"
    return firewalld_zones(failed)


def firewalld_zones(failed: list[Outcome]) -> str | None:
    """With firewalld running, traffic no rule of kvmnet's refuses is stopped by its zones:
    the catch-all reject of its own table, for what the bridge's zone does not allow."""
    if not any(HOOK.get(o.check) and "must not" not in o.reason for o in failed):
        return None
    with contextlib.suppress(Exception):  # no libnftables: no firewalld table to name
        from ..firewall import nft_rules  # needs libnftables' module, which hosts may lack

        if nft_rules.FIREWALLD in nft_rules.ruleset().tables:
            rejects = "table inet firewalld rejects what the bridge's zone refuses"
            return f"{FIREWALLD_BLAME} ({rejects})"
    return None
