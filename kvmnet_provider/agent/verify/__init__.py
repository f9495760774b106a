"""A network's own check of its model's row (network.verify): a short-lived probe on its bridge.

Modules: ``checks`` (the probes' names, MAC and addresses, and the judgement against the
model), ``packets`` (ICMP echo, DNS and DHCP as bytes), ``probe`` (the bridge probe's life:
made, asked, removed, also what a killed run left), ``inside`` (its own process, in a
namespace of its own), ``outer`` and ``outside`` (the same for the probe that stands for a
neighbour and tries the way in), ``tracked`` (what conntrack saw of that probe's packets to
the port forwards), ``spawn`` (a probe's process: started, asked, found again), ``blame``
(which foreign rule stopped a check, or let in what the model refuses).
"""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    """The network.* operations; the agent loads this package at the first of them."""
    from . import probe

    return {"network.verify": probe.network_verify}
