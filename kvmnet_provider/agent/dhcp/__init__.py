"""A network's DHCP/DNS server on the host: dnsmasq, managed like a guest's QEMU.

Modules: ``config`` (dnsmasq's files as text, pure), ``operations`` (start/update, read,
stop: the agent's dhcp.* requests). The spec's rules live in kvmnet_provider/spec/dhcp.py.
"""

from __future__ import annotations

from ...spec.wire import Handlers


def handlers() -> Handlers:
    """The dhcp.* operations; the agent loads this package at the first of them."""
    from . import operations

    return operations.handlers()
