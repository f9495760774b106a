"""What the host forwards and lets in: the forwarding switch and kvmnet's firewall rules.

Modules: ``plan`` (each model's rules as data, and how a foreign DROP is judged), ``backend``
(the choice between iptables and nftables, and the agent's firewall operations), ``iptables``
and ``iptables_nat`` (python-iptables on the legacy tables; ``iptc_import`` loads it),
``nftables`` with its ``nft_*`` modules (libnftables' JSON API), ``forwarding`` (the
ip_forward sysctls, shared by every stack on the host).
"""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    """The rule operations; the agent loads the backends at the first of them."""
    from . import backend

    return backend.handlers()
