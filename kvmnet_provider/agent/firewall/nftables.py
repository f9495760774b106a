"""The nftables backend: libnftables' JSON API (python3-nftables / pip-nftables).

Layout (after libvirt's `table ip libvirt_network`, plus the one thing a private table
cannot do):
- `table ip kvmnet`, kvmnet's own: base chain `forward` (filter hook, priority -10, policy
  accept) jumping to `guest_cross`, `guest_input`, `guest_output` (plan's sections, with
  conntrack and REJECT); `postrouting` / `prerouting` (nat hooks) for MASQUERADE and DNAT
  (`[iifname IF] fib daddr type local tcp dport P dnat to GUEST:PORT`, or `ip daddr ADDR`
  instead of the fib match when a destination is given: only packets to the host itself).
- An accept in a private table cannot get a packet past a DROP in another table at the same
  hook. So when a forward base chain has policy drop (Docker, ufw: iptables-nft's `ip filter
  FORWARD`), or `ip filter FORWARD` exists, a regular chain `KVMNET_FWD` in THAT table holds
  the accepts (plan's passes: only interface and address matches, which iptables-nft can still
  show) and is reached by one jump at the top of DOCKER-USER (when the base chain jumps there)
  or of the base chain. The private chains, at an earlier priority, have already rejected what
  the model refuses.
Rules carry the comment "kvmnet:<owner>", jumps "kvmnet"; what no network uses any more goes.
Its modules: ``nft_rules`` (the ruleset read, expressions, shared edits), ``nft_forward``,
``nft_input``, ``nft_nat`` (each kind of rule).
"""

from __future__ import annotations

from .nft_forward import forward_admitters, forward_ensure, forward_read, forward_remove
from .nft_input import input_ensure, input_read, input_remove
from .nft_nat import (
    dnat_ensure,
    dnat_read,
    dnat_remove,
    masquerade_ensure,
    masquerade_read,
    masquerade_remove,
)
from .nft_rules import NAME

__all__ = [
    "NAME",
    "dnat_ensure",
    "dnat_read",
    "dnat_remove",
    "forward_admitters",
    "forward_ensure",
    "forward_read",
    "forward_remove",
    "input_ensure",
    "input_read",
    "input_remove",
    "masquerade_ensure",
    "masquerade_read",
    "masquerade_remove",
]
