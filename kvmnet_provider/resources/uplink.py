"""UplinkBridge: a bridge that takes over a host's NIC, addresses and routes included.

The NIC usually carries the SSH session that changes it. So every change runs under a
host-side rollback (see agent/uplink/uplink.py): the provider applies it, then proves the host is
still reachable by opening a NEW SSH connection, and only that connection disarms the
rollback. If none gets through, the host restores itself at the deadline and the operation
fails saying what was rolled back and why.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, Resource

from ..connection import AgentCallError, HostError, HostSettings, agent_session, fresh_session
from ..connection.session import AgentSession
from ..spec import validate
from .base import Field, KvmnetProvider, _has_unknown, deleted_first, list_of, owner_id

PROBE_CONNECT_TIMEOUT = 4.0


def _state(value: Any) -> str:
    if value != "bridged":
        raise validate.InvalidInput("must be 'bridged' (it reports drift; do not set it)")
    return "bridged"


class UplinkBridgeProvider(KvmnetProvider):
    kind = "UplinkBridge"
    fields = {
        "name": Field(validate.ifname, required=True, replaces=True),
        "nic": Field(validate.ifname, required=True, replaces=True),
        # Empty: the NIC's own addresses move to the bridge.
        "addresses": Field(list_of(validate.interface_address), default=[], replaces=True),
        "mtu": Field(validate.mtu, replaces=True),
        "rollback_seconds": Field(lambda v: validate.int_range(v, 5, 600), default=30),
        "state": Field(_state, default="bridged"),
    }

    def resource_id(self, props: dict[str, Any]) -> str:
        """host:port/name<nic@ifindex: a bridge made anew gets another id, so its taps follow
        it (TapPort's bridge_id). Without an ifindex (an agent of before it said one), as
        before."""
        conn = props["connection"]
        ifindex = f"@{int(props['ifindex'])}" if props.get("ifindex") is not None else ""
        return f"{conn['host']}:{int(conn['port'])}/{props['name']}<{props['nic']}{ifindex}"

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
        """Run a NIC-moving op under the host's rollback; confirm over a new connection."""
        settings = HostSettings.from_props(props["connection"])
        seconds = int(props["rollback_seconds"])
        token = secrets.token_hex(16)
        started = time.monotonic()
        try:
            result = agent_session(settings).call(op, {**args, "token": token}, timeout=20)
            if result.get("token") is None:
                return dict(result)  # nothing was there to change
        except AgentCallError:
            raise  # refused or undone at once by the agent: the host is as it was
        except HostError:
            pass  # the old session died with the change: the new connection decides
        probe = dataclasses.replace(settings, connect_timeout=PROBE_CONNECT_TIMEOUT)
        last: Exception | None = None
        while time.monotonic() - started < seconds - 2:
            try:
                session = fresh_session(probe)
                session.call("uplink.confirm", {"token": token})
                return dict(session.call("uplink.read", {"owner": props["owner"]}) or {})
            except AgentCallError as exc:
                last = exc
                break
            except HostError as exc:
                last = exc
                time.sleep(1)
        # Cut off: the host puts itself back at the deadline. Prove it, then say so.
        time.sleep(max(0.0, seconds - (time.monotonic() - started)) + 1)
        status = self._after_rollback(probe, token, props["owner"], op)
        raise HostError(
            f"{settings.label}: {op.split('.')[1]} of {props['nic']} cut the host off: no new SSH "
            f"connection got through ({last}); the host restored its previous configuration "
            f"by itself after {seconds} s ({status})"
        )

    def _after_rollback(self, probe: HostSettings, token: str, owner: str, op: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            try:
                session = fresh_session(probe)
                status = session.call("uplink.status", {"token": token})
                if op == "uplink.takeover":
                    session.call("uplink.forget", {"owner": owner})
                rolled = status.get("rolled_back") or {}
                return "rolled back: " + ("ok" if rolled.get("ok") else str(rolled))
            except HostError as exc:
                if time.monotonic() > deadline:
                    return f"and it is STILL unreachable after the rollback: {exc}"
                time.sleep(1)

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


@dataclass
class UplinkBridgeArgs:
    connection: HostSettings
    name: str
    nic: str
    addresses: list[str] = field(default_factory=list)
    mtu: int | None = None
    rollback_seconds: int = 30


class UplinkBridge(Resource, module="kvmnet", name="UplinkBridge"):
    name: pulumi.Output[str]
    mac: pulumi.Output[str]
    ifindex: pulumi.Output[int]
    live_addresses: pulumi.Output[list[str]]

    def __init__(
        self, resource_name: str, args: UplinkBridgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props: dict[str, Any] = {
            "connection": args.connection.to_props(),
            "owner": owner_id("UplinkBridge", resource_name),
            "name": args.name,
            "nic": args.nic,
            "addresses": list(args.addresses),
            "mtu": args.mtu,
            "rollback_seconds": args.rollback_seconds,
            "state": "bridged",
            **dict.fromkeys(
                ("mac", "ifindex", "live_addresses", "moved_routes", "previous_addresses")
            ),
        }
        super().__init__(UplinkBridgeProvider(), resource_name, props, deleted_first(opts))
