"""The firewall backends, as the host's settings, the rule resources and the agent name them."""

from __future__ import annotations

# Where a rule can live: python-iptables on the legacy tables, or libnftables' JSON API.
RULE_BACKENDS = ("iptables", "nftables")
# What a host's firewall_backend may say: "auto" lets the agent pick the one the host uses.
FIREWALL_BACKENDS = ("auto", *RULE_BACKENDS)
