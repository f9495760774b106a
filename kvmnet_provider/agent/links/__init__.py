"""The host's links: bridges and taps, read from netlink dumps and changed by netlink requests.

Modules: ``rtdump`` (the kernel's link and address dumps, parsed without pyroute2), ``dump``
and ``readcache`` (link reads answered from one dump), ``state`` (what a link's record says:
its owner, its state), ``rtwrite`` (the link and address changes as rtnetlink requests, taps
through /dev/net/tun), ``overlap`` (networks a bridge may not take), ``netlink`` (pyroute2's
IPRoute, imported alone, for the uplink and guest modules), ``bridges`` (creating, updating and
deleting bridges and taps), ``ops`` (the link changes as agent operations).
"""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    """The link changes; the agent loads them at the first change."""
    from . import ops

    return ops.handlers()
