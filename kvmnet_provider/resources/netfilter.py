"""ForwardingSetting, MasqueradeRule and PortForward: the host-wide parts of the routed and
NAT models."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import DiffResult

from ..connection import HostSettings
from ..connection.session import AgentSession
from ..spec import masquerade, validate
from ..spec.firewall import RECORDED_BACKENDS, left_behind
from .autostart import autostart_field
from .base import KvmnetProvider, host_key
from .declare import DeclaredResource, declaration, field_table, kvmnet_field


class _OwnedByMarkProvider(KvmnetProvider):
    """Host-wide objects found by their owner mark alone (no name): one agent op each to
    ensure, read and remove; `ensure` also serves updates (it rewrites what differs)."""

    ops: tuple[str, str, str]  # ensure, read, remove
    id_segment: str

    def resource_id(self, props: dict[str, Any]) -> str:
        return f"{host_key(props)}/{self.id_segment}/{props['owner']}"

    def overlay(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def present(self, live: dict[str, Any]) -> bool:
        return bool(live["count"])

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        return self.overlay(props, agent.call(self.ops[0], self.spec(props)))

    def host_read(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any] | None:
        live = agent.call(self.ops[1], {"owner": props["owner"]})
        return self.overlay(props, live) if self.present(live) else None

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        return self.host_create(agent, news)

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        agent.call(self.ops[2], {"owner": props["owner"]})


def firewall_backend(props: dict[str, Any]) -> str:
    """The backend a rule's operations go to: the one recorded in the state when the rule was
    made (read and delete must find it where it is), else the host's `firewall_backend`."""
    recorded = props.get("backend")
    if recorded in RECORDED_BACKENDS:
        return str(recorded)
    return str((props.get("connection") or {}).get("firewall_backend") or "auto")


class FirewallRuleProvider(_OwnedByMarkProvider):
    """A rule set kept by the host's firewall backend; the backend used is in the state."""

    def spec(self, props: dict[str, Any]) -> dict[str, Any]:
        return {**super().spec(props), "backend": firewall_backend(props)}

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        wanted = {**props, "backend": None}  # a new object goes where the setting says
        live = agent.call(self.ops[0], self.spec(wanted))
        return {**self.overlay(props, live), "backend": live["backend"]}

    def host_read(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any] | None:
        live = agent.call(self.ops[1], self.read_args(props))
        if not self.present(live):
            return None
        return {**self.overlay(props, live), "backend": live["backend"]}

    def read_args(self, props: dict[str, Any]) -> dict[str, Any]:
        return {"owner": props["owner"], "backend": firewall_backend(props)}

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        live = self.host_create(agent, news)
        stale = olds.get("backend") and left_behind(olds["backend"], live["backend"])
        if stale:
            # the backend changed: the rules move, nothing stays behind in the old one
            agent.call(self.ops[2], {"owner": olds["owner"], "backend": stale})
        return live

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        agent.call(self.ops[2], {"owner": props["owner"], "backend": firewall_backend(props)})


def _protocol(value: Any) -> str:
    return validate.protocol(value)


def _ipv4(value: Any) -> str:
    return validate.ipv4_address(value)


def _port(value: Any) -> int:
    return validate.port(value)


@declaration
class ForwardingSettingArgs:
    connection: HostSettings
    ipv6: bool = kvmnet_field(validate.boolean, default=False)
    # What a ForwardingSetting is for: the state carries it, cross_check holds it true.
    ipv4: bool = kvmnet_field(validate.boolean, default=True, init=False)
    autostart: bool | None = autostart_field()


@declaration
class MasqueradeRuleArgs:
    connection: HostSettings
    source: pulumi.Input[str] = kvmnet_field(validate.network)
    out_interface: pulumi.Input[str] | None = kvmnet_field(validate.ifname, default=None)
    autostart: bool | None = autostart_field()


@declaration
class PortForwardArgs:
    connection: HostSettings
    host_port: pulumi.Input[int] = kvmnet_field(_port)
    guest_address: pulumi.Input[str] = kvmnet_field(_ipv4)
    guest_port: pulumi.Input[int] = kvmnet_field(_port)
    protocol: pulumi.Input[str] = kvmnet_field(_protocol, default="tcp")
    # only packets arriving on this NIC
    in_interface: pulumi.Input[str] | None = kvmnet_field(validate.ifname, default=None)
    # only packets to this host address
    destination: pulumi.Input[str] | None = kvmnet_field(_ipv4, default=None)
    autostart: bool | None = autostart_field()


class ForwardingSettingProvider(_OwnedByMarkProvider):
    kind = "ForwardingSetting"
    ops = ("forwarding.acquire", "forwarding.read", "forwarding.release")
    id_segment = "forwarding"
    fields = field_table(ForwardingSettingArgs)

    def cross_check(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        if not props["ipv4"]:
            return [
                (
                    "ipv4",
                    "must be true: a ForwardingSetting turns forwarding on; delete it "
                    "to restore the host's previous value",
                )
            ]
        return []

    def overlay(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        out = {"ipv4": live["ipv4"], "previous": live["previous"], "holders": live["holders"]}
        if props["ipv6"]:
            out["ipv6"] = live["ipv6"]
        return out

    def present(self, live: dict[str, Any]) -> bool:
        return bool(live["held"])


class MasqueradeRuleProvider(FirewallRuleProvider):
    kind = "MasqueradeRule"
    ops = ("masquerade.ensure", "masquerade.read", "masquerade.remove")
    id_segment = "masquerade"
    fields = field_table(MasqueradeRuleArgs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        found = super().diff(_id, olds, news)
        rules = olds.get("rules")
        if found.changes or not isinstance(rules, list) or masquerade.shape_ok(rules):
            return found
        # The inputs are the same, but the rules in the state are not the set kvmnet makes
        # now (one MASQUERADE, from an older kvmnet): an update rewrites them in place.
        return DiffResult(changes=True, replaces=[], delete_before_replace=True)

    def overlay(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        rules = live["rules"]
        if not masquerade.shape_ok(rules):
            # Not the rules we make: show it as drift so the next update rewrites them.
            return {"source": None, "out_interface": None, "rules": rules}
        rule = rules[-1]
        return {"source": rule["source"], "out_interface": rule["out_interface"], "rules": rules}


def _dnat_shape_ok(rule: dict[str, Any]) -> bool:
    """Whether a DNAT rule as read back has the shape kvmnet makes: only packets to the host
    itself (`dst_type` local), unless an explicit `destination` narrows it instead. A rule
    without that match (it would catch traffic the host only forwards) does not, nor does a
    hand-edited one."""
    return rule.get("dst_type") == (None if rule.get("destination") else validate.DNAT_DST_LOCAL)


class PortForwardProvider(FirewallRuleProvider):
    """Destination NAT: the NAT model's way in (`-p P -m addrtype --dst-type LOCAL --dport HP
    -j DNAT --to GUEST:GP`: packets to the host itself, not those it forwards)."""

    kind = "PortForward"
    ops = ("dnat.ensure", "dnat.read", "dnat.remove")
    id_segment = "dnat"
    fields = field_table(PortForwardArgs)

    def cross_check(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        # The DNAT matches the port on every address of the host unless `destination` says
        # otherwise: a forward of the port kvmnet's own SSH uses would cut it off the host,
        # and no later command (destroy included) could reach the host to undo it.
        conn, port = props.get("connection"), props.get("host_port")
        if not isinstance(conn, dict) or props.get("protocol") != "tcp":
            return []
        destination = props.get("destination")
        if port == conn.get("port") and destination in (None, conn.get("host")):
            return [
                (
                    "host_port",
                    f"must not be {port}: kvmnet reaches this host's sshd on tcp/{port} "
                    "(connection.port), and forwarding it to a guest would cut kvmnet off the "
                    "host; pick another host_port",
                )
            ]
        return []

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        found = super().diff(_id, olds, news)
        rules = olds.get("rules")
        if found.changes or not (isinstance(rules, list) and len(rules) == 1):
            return found
        if _dnat_shape_ok(rules[0]):
            return found
        # The inputs are the same, but the rule on the host (as the state or a refresh read
        # it) is not of the shape kvmnet makes; an update rewrites it in place (dnat.ensure
        # replaces the owner's rule).
        return DiffResult(changes=True, replaces=[], delete_before_replace=True)

    def overlay(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        rules = live["rules"]
        if len(rules) != 1 or not _dnat_shape_ok(rules[0]):
            return {"host_port": None, "rules": rules}  # drift: the next update rewrites it
        rule = rules[0]
        address, _, port = str(rule["to"]).rpartition(":")
        return {
            "protocol": rule["protocol"],
            "host_port": rule["host_port"],
            "guest_address": address,
            "guest_port": int(port),
            "in_interface": rule["in_interface"],
            "destination": rule["destination"],
            "rules": rules,
        }


class ForwardingSetting(
    DeclaredResource[ForwardingSettingArgs], module="kvmnet", name="ForwardingSetting"
):
    provider_type = ForwardingSettingProvider

    ipv4: pulumi.Output[bool]
    previous: pulumi.Output[dict[str, str]]
    holders: pulumi.Output[int]


class MasqueradeRule(DeclaredResource[MasqueradeRuleArgs], module="kvmnet", name="MasqueradeRule"):
    provider_type = MasqueradeRuleProvider

    source: pulumi.Output[str]
    rules: pulumi.Output[list[dict[str, Any]]]
    backend: pulumi.Output[str]


class PortForward(DeclaredResource[PortForwardArgs], module="kvmnet", name="PortForward"):
    provider_type = PortForwardProvider

    host_port: pulumi.Output[int]
    rules: pulumi.Output[list[dict[str, Any]]]
    backend: pulumi.Output[str]
