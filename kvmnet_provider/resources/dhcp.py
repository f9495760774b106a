"""DhcpServer: a network's DHCP and DNS (dnsmasq on its bridge), with its INPUT rules.

One per routed or NAT network, after the bridge and its address. dnsmasq runs detached on the
host (agent/dhcp/), bound to the bridge only; its accepts for DHCP and DNS go into the host's
firewall backend (agent/fw_*.py input_*), so a host with an INPUT policy of DROP serves too.
`read` reports the live leases, and a dead dnsmasq or a missing rule as drift (`serving`
false, `problems` saying what); the next `up` restarts it with its lease file kept. Changing
the guests re-reads the hosts files (SIGHUP); changing the range, domain or subnet restarts.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from ..connection import HostSettings
from ..connection.session import AgentSession
from ..spec import dhcp, validate
from ..spec.firewall import left_behind
from .autostart import autostart_field
from .base import KvmnetProvider, host_key
from .declare import DeclaredResource, declaration, field_table, kvmnet_field
from .netfilter import firewall_backend

START_TIMEOUT = 60.0


@dataclass
class DhcpHost:
    """A declared guest: its MAC gets `address` (a static lease) and `name` in DNS."""

    name: str
    mac: str
    address: str | None = None  # None: an address from the range


def _host_props(hosts: Sequence[DhcpHost | dict[str, Any]]) -> list[dict[str, str | None]]:
    return [dataclasses.asdict(h) if isinstance(h, DhcpHost) else dict(h) for h in hosts]


@declaration
class DhcpServerArgs:
    connection: HostSettings
    bridge: pulumi.Input[str] = kvmnet_field(validate.ifname, replaces=True)
    subnet: str = kvmnet_field(validate.network)
    # the bridge's address: dnsmasq answers DNS there, and it is the router
    gateway: str = kvmnet_field(dhcp.address)
    domain: str = kvmnet_field(dhcp.domain, default=dhcp.DEFAULT_DOMAIN)
    # default: the upper half of the subnet
    dhcp_range: tuple[str, str] | None = kvmnet_field(
        dhcp.dhcp_range, default=None, prop=lambda r: list(r) if r else None
    )
    hosts: Sequence[DhcpHost | dict[str, Any]] = kvmnet_field(
        dhcp.hosts, default_factory=list, prop=_host_props
    )
    # Drift: false when read finds dnsmasq dead or its rules gone (up repairs it).
    serving: bool = kvmnet_field(validate.boolean, default=True, init=False)
    autostart: bool | None = autostart_field()


class DhcpServerProvider(KvmnetProvider):
    kind = "DhcpServer"
    fields = field_table(DhcpServerArgs)

    def resource_id(self, props: dict[str, Any]) -> str:
        return f"{host_key(props)}/dhcp/{props['bridge']}"

    def cross_check(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        failures = []
        if props.get("serving") is False:
            failures.append(("serving", "must be true (delete the DhcpServer to stop it)"))
        subnet = props.get("subnet")
        if isinstance(subnet, str) and int(subnet.rsplit("/", 1)[1]) > 30:
            failures.append(("subnet", f"{subnet} is too small for DHCP (at most /30)"))
        if failures or any(not isinstance(props.get(k), str) for k in ("subnet", "gateway")):
            return failures  # unknown at preview: the agent checks again
        return dhcp.cross_check(props)

    def _rules_spec(self, props: dict[str, Any], backend: str) -> dict[str, Any]:
        return {
            "owner": props["owner"],
            "backend": backend,
            "bridge": props["bridge"],
            "address": props["gateway"],
            "subnet": props["subnet"],
        }

    def _server_spec(self, props: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(props)
        spec.pop("serving", None)
        return spec

    def _live(self, server: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
        problems = list(rules.get("problems") or [])
        if not rules.get("count"):
            problems.append("the DHCP/DNS input rules are missing")
        if not server.get("running"):
            problems.append("dnsmasq is not running")
        return {
            "pid": server.get("pid"),
            "leases": server.get("leases") or [],
            "run_dir": server.get("run_dir"),
            "backend": rules.get("backend"),
            "rules": rules.get("rules") or [],
            "problems": problems,
            "serving": not problems,
        }

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._apply(agent, props)
        except BaseException:
            # Pulumi records no resource for a failed create, so no destroy would ever remove
            # its INPUT rules or its run dir: they go now (each by this owner only).
            for op, args in (
                ("dhcp.stop", {"bridge": props["bridge"], "owner": props["owner"]}),
                ("input.remove", {"owner": props["owner"], "backend": firewall_backend(
                    {**props, "backend": None})}),
            ):  # fmt: skip
                with contextlib.suppress(Exception):  # the create's own error is the news
                    agent.call(op, args)
            raise

    def _apply(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        backend = firewall_backend({**props, "backend": None})  # a new object: the setting
        rules = agent.call("input.ensure", self._rules_spec(props, backend))
        server = agent.call("dhcp.start", self._server_spec(props), timeout=START_TIMEOUT)
        return self._live(server, rules)

    def host_read(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any] | None:
        server = agent.call("dhcp.read", {"bridge": props["bridge"], "owner": props["owner"]})
        if server is None:
            return None  # its run dir is gone: refresh drops it, up starts it again
        rules = agent.call("input.read", self._rules_spec(props, firewall_backend(props)))
        return self._live(server, rules)

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        live = self._apply(agent, news)  # a failed update keeps what runs: no undo
        stale = olds.get("backend") and left_behind(olds["backend"], live["backend"])
        if stale:
            # the backend changed: the rules move, nothing stays behind in the old one
            agent.call("input.remove", {"owner": olds["owner"], "backend": stale})
        return live

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        agent.call("dhcp.stop", {"bridge": props["bridge"], "owner": props["owner"]})
        agent.call("input.remove", {"owner": props["owner"], "backend": firewall_backend(props)})


class DhcpServer(DeclaredResource[DhcpServerArgs], module="kvmnet", name="DhcpServer"):
    provider_type = DhcpServerProvider

    pid: pulumi.Output[int]
    leases: pulumi.Output[list[dict[str, Any]]]
    run_dir: pulumi.Output[str]
    serving: pulumi.Output[bool]
    problems: pulumi.Output[list[str]]
    backend: pulumi.Output[str]
    rules: pulumi.Output[list[dict[str, Any]]]


__all__ = ["DhcpHost", "DhcpServer", "DhcpServerArgs", "DhcpServerProvider"]
