"""UplinkBridge: a bridge that takes over a host's NIC, addresses and routes included.

The NIC usually carries the SSH session that changes it. So every change runs under a
host-side rollback (rollback.py; agent/uplink/uplink.py on the host).
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult

from ..connection import HostError, HostSettings
from ..connection.session import AgentSession
from ..spec import validate
from .autostart import autostart_field
from .base import KvmnetProvider, _has_unknown, host_key, list_of
from .declare import DeclaredResource, declaration, field_table, kvmnet_field
from .rollback import protected


def _state(value: Any) -> str:
    if value != "bridged":
        raise validate.InvalidInput("must be 'bridged' (it reports drift; do not set it)")
    return "bridged"


@declaration
class UplinkBridgeArgs:
    connection: HostSettings
    name: str = kvmnet_field(validate.ifname, replaces=True)
    nic: str = kvmnet_field(validate.ifname, replaces=True)
    # Empty: the NIC's own addresses move to the bridge.
    addresses: list[str] = kvmnet_field(
        list_of(validate.interface_address), default_factory=list, replaces=True, prop=list
    )
    mtu: int | None = kvmnet_field(validate.mtu, default=None, replaces=True)
    rollback_seconds: int = kvmnet_field(lambda v: validate.int_range(v, 5, 600), default=30)
    # Drift: read reports another state when the NIC is no longer the bridge's port.
    state: str = kvmnet_field(_state, default="bridged", init=False)
    autostart: bool | None = autostart_field()


class UplinkBridgeProvider(KvmnetProvider):
    kind = "UplinkBridge"
    fields = field_table(UplinkBridgeArgs)

    def resource_id(self, props: dict[str, Any]) -> str:
        """host:port/name<nic@ifindex: a bridge made anew gets another id, so its taps follow
        it (TapPort's bridge_id). An agent that reports no ifindex gives an id without one."""
        ifindex = f"@{int(props['ifindex'])}" if props.get("ifindex") is not None else ""
        return f"{host_key(props)}/{props['name']}<{props['nic']}{ifindex}"

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        result = super().check(olds, news)
        inputs = result.inputs
        if result.failures or _has_unknown(inputs.get("connection")) or _has_unknown(inputs["nic"]):
            return result
        # Refuse a NIC that is absent or already another bridge's port before anything runs.
        try:
            live = self._agent(inputs).call("uplink.inspect", {"nic": inputs["nic"]})
        except HostError as exc:
            return CheckResult(inputs, [_failure("connection", f"cannot inspect the NIC: {exc}")])
        host = inputs["connection"]["host"]
        if not live["exists"]:
            return CheckResult(
                inputs, [_failure("nic", f"NIC {inputs['nic']} does not exist on {host}")]
            )
        ours = live["master"] == inputs["name"] and live["master_owner"] == inputs["owner"]
        if live["master"] and not ours:
            return CheckResult(
                inputs,
                [
                    _failure(
                        "nic",
                        f"NIC {inputs['nic']} on {host} is already a port of bridge "
                        f"{live['master']}",
                    )
                ],
            )
        if live["kind"] == "bridge":
            return CheckResult(inputs, [_failure("nic", f"{inputs['nic']} is itself a bridge")])
        return result

    def overlay(self, live: dict[str, Any]) -> dict[str, Any]:
        return {
            "state": live["state"],
            "mac": live["mac"],
            "ifindex": live.get("ifindex"),
            "live_addresses": live["addresses"],
            "moved_routes": live["moved_routes"],
            "previous_addresses": live["previous_addresses"],
        }

    def _protected(self, props: dict[str, Any], op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a NIC-moving op under the host's rollback (rollback.py)."""

        def after(session: AgentSession) -> dict[str, Any]:
            return dict(session.call("uplink.read", {"owner": props["owner"]}) or {})

        forget_op = "uplink.forget" if op == "uplink.takeover" else None
        return protected(props, op, args, props["nic"], after, forget_op)

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        args = {k: props.get(k) for k in ("owner", "nic", "addresses", "mtu", "rollback_seconds")}
        args["bridge"] = props["name"]
        return self.overlay(self._protected(props, "uplink.takeover", args))

    def host_read(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any] | None:
        live = agent.call("uplink.read", {"owner": props["owner"]})
        return self.overlay(live) if live else None

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        if olds.get("state") == "bridged":
            return self.host_read(agent, news) or {}
        return self.host_create(agent, news)  # drifted: bridge the NIC again, protected

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        args = {"owner": props["owner"], "rollback_seconds": props["rollback_seconds"]}
        self._protected(props, "uplink.release", args)


def _failure(prop: str, reason: str) -> CheckFailure:
    return CheckFailure(prop, f"{prop}: {reason}")


class UplinkBridge(DeclaredResource[UplinkBridgeArgs], module="kvmnet", name="UplinkBridge"):
    provider_type = UplinkBridgeProvider

    name: pulumi.Output[str]
    mac: pulumi.Output[str]
    ifindex: pulumi.Output[int]
    live_addresses: pulumi.Output[list[str]]
    moved_routes: pulumi.Output[list[dict[str, Any]]]
    previous_addresses: pulumi.Output[list[str]]
