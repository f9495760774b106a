"""Live reads of a Picture's resources, and the drift they show.

Each resource is read on its host as `pulumi refresh` reads it: its kind's provider's
host_read, through the host's agent session, with the state's outputs as the props. What the
read answers is compared with the state: gone (None), or the outputs that differ. The hosts
are read side by side, each host's resources one after the other on its one session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import errors
from ..connection import AgentCallError, HostError, HostSettings, agent_session, close_all
from .state import Picture, Resource

# (kind, the state's outputs) -> the live outputs, or None when the object is gone
Reader = Callable[[str, dict[str, Any]], dict[str, Any] | None]
# Outputs that change without anything being wrong: DHCP leases come and go, other stacks
# hold the forwarding setting too, and the rules' listing is summed up by `problems`.
IGNORED = frozenset({"leases", "holders", "rules", "previous", "moved_routes"})
MAX_HOSTS_AT_ONCE = 8


@functools.cache
def _providers() -> dict[str, Any]:
    """Each kind's provider class (imported late: the drawing needs none of them)."""
    from ..resources.dhcp import DhcpServerProvider
    from ..resources.forward_rules import ForwardRulesProvider
    from ..resources.guest import QemuGuestProvider
    from ..resources.links import BridgeProvider, TapPortProvider
    from ..resources.netfilter import (
        ForwardingSettingProvider,
        MasqueradeRuleProvider,
        PortForwardProvider,
    )
    from ..resources.network_check import NetworkCheckProvider
    from ..resources.uplink import UplinkBridgeProvider

    kinds = (
        BridgeProvider,
        TapPortProvider,
        QemuGuestProvider,
        DhcpServerProvider,
        ForwardRulesProvider,
        ForwardingSettingProvider,
        MasqueradeRuleProvider,
        PortForwardProvider,
        UplinkBridgeProvider,
        NetworkCheckProvider,
    )
    return {p.kind: p for p in kinds}


def host_read(kind: str, outputs: dict[str, Any]) -> dict[str, Any] | None:
    """What the provider's read of `kind` finds on the host (the refresh's own path)."""
    provider = _providers()[kind]()
    agent = agent_session(HostSettings.from_props(outputs["connection"]))
    live: dict[str, Any] | None = provider.host_read(agent, dict(outputs))
    return live


def differences(stated: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """The outputs a live read gives otherwise than the state holds, as `key: was -> now`."""
    found = []
    for key in sorted(live):
        if key in IGNORED or key not in stated or stated[key] == live[key]:
            continue
        found.append(f"{key}: {_short(stated[key])} -> {_short(live[key])}")
    return found


def _short(value: Any) -> str:
    text = "none" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def mark_drift(resource: Resource, live: dict[str, Any] | None) -> None:
    """Record on `resource` what its live read shows: gone, or what differs."""
    if live is None:
        resource.drift = ["gone"]
        return
    resource.drift = differences(resource.outputs, live)


def _read_host(resources: list[Resource], reader: Reader) -> str | None:
    """Read each of one host's resources; why the host could not be read, if it could not."""
    for r in resources:
        try:
            mark_drift(r, reader(r.kind, r.outputs))
        except AgentCallError as exc:  # the agent refused this one read: the others go on
            r.drift = [f"unread: {errors.one_line(exc)}"]
        except HostError as exc:  # the host, not this object: the rest would fail alike
            return errors.one_line(exc)
        except Exception as exc:  # one object's read failed: say so on it, read the others
            if not errors.is_expected(exc):
                raise
            r.drift = [f"unread: {errors.one_line(exc)}"]
    return None


def read_live(picture: Picture, reader: Reader = host_read) -> Picture:
    """Mark `picture`'s drift from live reads (in place; the picture is returned)."""
    by_host: dict[str, list[Resource]] = {}
    for r in picture.resources:
        by_host.setdefault(r.host, []).append(r)
    try:
        workers = max(1, min(MAX_HOSTS_AT_ONCE, len(by_host)))
        with ThreadPoolExecutor(workers) as pool:
            found = pool.map(lambda rs: _read_host(rs, reader), by_host.values())
            outcomes = dict(zip(by_host, found, strict=True))
    finally:
        if reader is host_read:
            close_all()
    for host in picture.hosts:
        host.unreadable = outcomes.get(host.key)
    picture.live = True
    return picture
