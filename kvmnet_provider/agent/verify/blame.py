"""Which rule stopped a failed check: asked of the firewall room, which already judges foreign
DROP/REJECT rules that run before kvmnet's jump (plan.could_block, each backend's blockers).
Nothing is judged here twice: this only picks the checks' rules to read and the first name."""

from __future__ import annotations

import contextlib
from typing import Any

from ..firewall import backend
from .checks import Outcome

BLOCKED = "blocked by "
# What each check's traffic crosses: the host's FORWARD hook (guests to the outside) or its
# INPUT hook (the bridge's own address: ping, DNS, DHCP).
HOOK = {"outside": "forward", "gateway": "input", "dns": "input", "dhcp": "input"}


def blocker(
    failed: list[Outcome], rules: dict[str, Any] | None, input_rules: dict[str, Any] | None
) -> str | None:
    """The first foreign rule that drops a failed check's traffic, as the firewall names it;
    None when it names none (or a refusal failed: a leak has no blocker)."""
    ops = backend.handlers()
    for outcome in failed:
        hook = HOOK.get(outcome.check)
        args = rules if hook == "forward" else input_rules if hook == "input" else None
        if not args or (outcome.check == "outside" and "must not" in outcome.reason):
            continue
        with contextlib.suppress(Exception):  # a read that fails names nothing
            read = ops[f"{hook}.read"](dict(args))
            for problem in read.get("problems") or []:
                if problem.startswith(BLOCKED):
                    return problem[len(BLOCKED) :]
            if hook == "forward":
                other = backend.other_backend_drop(read.get("backend") or "iptables")
                if other:
                    return f"{other} (a DROP policy kvmnet's rules cannot pass)"
    return None
