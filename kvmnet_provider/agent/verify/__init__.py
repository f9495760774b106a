"""A network's own check of its model's row (network.verify): a short-lived probe on its bridge.

Modules: ``checks`` (the probe's names, MAC and address, and the judgement against the model),
``packets`` (ICMP echo, DNS and DHCP as bytes), ``probe`` (the probe's life: made, asked,
removed, also what a killed run left), ``inside`` (the probe's own process, in a namespace of
its own), ``blame`` (which foreign rule stopped a check, as the firewall room judges it).
"""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    """The network.* operations; the agent loads this package at the first of them."""
    from . import probe

    return {"network.verify": probe.network_verify}
