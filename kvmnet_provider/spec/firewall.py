"""The firewall backends, as the host's settings, the rule resources and the agent name them."""

from __future__ import annotations

# Where a rule can live: python-iptables on the legacy tables, or libnftables' JSON API.
RULE_BACKENDS = ("iptables", "nftables")
# What a host's firewall_backend may say: "auto" lets the agent pick the one the host uses.
FIREWALL_BACKENDS = ("auto", *RULE_BACKENDS)
# What the state may record for a filter rule set: one backend, or both when the host drops
# at the hook in both (kvmnet's accepts then go in each).
BOTH = "both"
RECORDED_BACKENDS = (*RULE_BACKENDS, BOTH)


def sides(recorded: str) -> set[str]:
    """The backends a recorded backend names."""
    return set(RULE_BACKENDS) if recorded == BOTH else {recorded}


def left_behind(old: str, new: str) -> str | None:
    """Where rules recorded in `old` stay once they are in `new`: the backend to remove them
    from (None when `new` covers every side of `old`)."""
    stale = sides(old) - sides(new)
    if not stale:
        return None
    return stale.pop() if len(stale) == 1 else BOTH
