"""pyroute2's IPRoute, imported without the rest of pyroute2; readers both link modules use.

`import pyroute2` runs the package's __init__, which imports NDB, IPDB, conntrack and more
that kvmnet never uses, at every session's start. The package is registered
without running that file, then only the IPRoute module is imported. Should that fail (a
pyroute2 laid out differently), the package is imported the usual way.
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import sys
from typing import Any


def _register_bare_package() -> None:
    if "pyroute2" in sys.modules:
        return  # imported already, one way or the other
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("pyroute2 is not installed")
    sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)


def _forget_pyroute2() -> None:
    for name in [n for n in sys.modules if n == "pyroute2" or n.startswith("pyroute2.")]:
        del sys.modules[name]


@functools.cache
def iproute_class() -> Any:
    try:
        _register_bare_package()
        from pyroute2.iproute.linux import IPRoute

        return IPRoute
    except Exception:
        _forget_pyroute2()
    from pyroute2 import IPRoute

    return IPRoute


def link_addresses(ipr: Any, idx: int) -> list[str]:
    """A link's addresses, sorted CIDR strings, without the IPv6 link-local ones the kernel
    adds by itself. (get_attr, not get: pyroute2 0.7's get does not look up attributes.)"""
    out = []
    for msg in ipr.get_addr(index=idx):
        iface = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        if not (iface.version == 6 and iface.ip.is_link_local):
            out.append(str(iface))
    return sorted(out)


def add_link(ipr: Any, index: int | None, **made: Any) -> int:
    """Add a link, at ifindex `index` when one is asked for and free (a restore keeps the
    ifindex Pulumi's ids name), else where the kernel puts it; returns its ifindex."""
    try:
        ipr.link("add", **made, **({"index": index} if index else {}))
    except Exception:
        if not index:
            raise
        ipr.link("add", **made)  # that ifindex is taken
    found = ipr.link_lookup(ifname=made["ifname"])
    if not found:
        raise RuntimeError(f"{made['ifname']} was added but is not there")
    return int(found[0])
