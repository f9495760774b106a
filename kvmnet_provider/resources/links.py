"""Bridge and TapPort: kvmnet's links on a host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
from pulumi.dynamic import DiffResult

from ..connection import HostSettings
from ..connection.session import AgentSession
from ..errors import ConfigError
from ..spec import validate
from ..spec.validate import InvalidInput
from .autostart import autostart_field
from .base import KvmnetProvider, host_key, is_unknown, list_of
from .declare import DeclaredResource, declaration, field_table, kvmnet_field
from .linkreads import forget, read_link
from .rollback import DEFAULT_SECONDS, ROLLBACK_SECONDS, protected
from .uplink import UplinkBridge


class _LinkProvider(KvmnetProvider):
    link_kind: str = ""  # the kernel's name for the kind ("tun" for a tap)
    agent_ops: str = ""  # the agent's operations: <agent_ops>.create and <agent_ops>.update

    def resource_id(self, props: dict[str, Any]) -> str:
        return f"{host_key(props)}/{props['name']}"

    def host_read(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any] | None:
        # Refresh reads every link: one listing of the host's links answers them (linkreads).
        live = read_link(agent, props["name"])
        if (
            live is None
            or live.get("owner") != props["owner"]
            or live.get("kind") != self.link_kind
        ):
            return None  # ours is gone (a link of that name that is not ours is not ours)
        return self.overlay(props, live)

    def overlay(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        out = {"ifindex": live["ifindex"], "mac": live["mac"], "up": live["up"]}
        if props.get("mtu") is not None:
            out["mtu"] = live["mtu"]
        return out

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        forget(agent)
        return self.overlay(props, agent.call(f"{self.agent_ops}.create", self.spec(props)))

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        forget(agent)
        return self.overlay(news, agent.call(f"{self.agent_ops}.update", self.spec(news)))

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        forget(agent)
        agent.call_batched("link.delete", {"name": props["name"], "owner": props["owner"]})


def _bridge_id(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 300:
        raise InvalidInput(f"must be a Bridge's or UplinkBridge's id, got {value!r:.80}")
    return value


@declaration
class BridgeArgs:
    connection: HostSettings
    name: str = kvmnet_field(validate.ifname, replaces=True)
    # None (not given): a bridge kvmnet makes has none, an adopted bridge keeps the ones it
    # has; a list (empty too) is exactly the bridge's addresses.
    addresses: Sequence[pulumi.Input[str]] | None = kvmnet_field(
        list_of(validate.bridge_address), default=None, prop=list
    )
    mtu: pulumi.Input[int] | None = kvmnet_field(validate.mtu, default=None)
    stp: bool = kvmnet_field(validate.boolean, default=False)
    forward_delay: int = kvmnet_field(lambda v: validate.int_range(v, 0, 30), default=0)
    up: bool = kvmnet_field(validate.boolean, default=True)
    # Take over a bridge made outside kvmnet (by the host's network config): it is released,
    # not deleted, with what it had before given back.
    adopt: bool = kvmnet_field(validate.boolean, default=False)
    # An adopted bridge's addresses change under the host's rollback (rollback.py): undone
    # by the host after this many seconds unless a new SSH login gets through.
    rollback_seconds: int = kvmnet_field(
        lambda v: validate.int_range(v, *ROLLBACK_SECONDS), default=DEFAULT_SECONDS
    )
    autostart: bool | None = autostart_field()


@declaration
class TapPortArgs:
    connection: HostSettings
    name: str = kvmnet_field(validate.ifname, replaces=True)
    # A Bridge, an UplinkBridge, or a bridge's name; the state keeps the name.
    bridge: pulumi.Resource | str = kvmnet_field(validate.ifname)
    owner_user: str | None = kvmnet_field(validate.user_name, default=None, replaces=True)
    multi_queue: bool = kvmnet_field(validate.boolean, default=False, replaces=True)
    mtu: pulumi.Input[int] | None = kvmnet_field(validate.mtu, default=None)
    up: bool = kvmnet_field(validate.boolean, default=True)
    adopt: bool = kvmnet_field(validate.boolean, default=False)
    # A bridge made outside this program (by hand, or by another stack): named, not declared.
    external_bridge: bool = False
    # The declared Bridge's (or UplinkBridge's) id, which names its ifindex: a bridge made
    # anew (replaced: deleted, then created) has another id, so its taps are updated, which
    # joins them to it again (the kernel leaves a deleted bridge's ports detached, and
    # nothing else of theirs changes). An update in place keeps the id: preview shows no
    # tap for it. TapPort sets it from `bridge`.
    bridge_id: pulumi.Input[str] | None = kvmnet_field(_bridge_id, default=None, init=False)
    autostart: bool | None = autostart_field()


class BridgeProvider(_LinkProvider):
    kind = "Bridge"
    link_kind = "bridge"
    agent_ops = "bridge"
    fields = field_table(BridgeArgs)

    def resource_id(self, props: dict[str, Any]) -> str:
        """host:port/name@ifindex: a bridge made anew gets another id (see TapPort's bridge_id)."""
        return f"{super().resource_id(props)}@{props['ifindex']}"

    def normalise(self, news: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        inputs, failures = super().normalise(news)
        if inputs.get("addresses") is None and inputs.get("adopt") is not True:
            inputs["addresses"] = []  # not given, on a bridge kvmnet makes: none
        return inputs, failures

    def cross_check(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        if props["stp"] and props["forward_delay"] < 2:
            return [("forward_delay", "must be 2-30 seconds when stp is on (the kernel's range)")]
        return []

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if olds.get("rollback_seconds") is None:  # a state from before the input: no change
            olds = {**olds, "rollback_seconds": news.get("rollback_seconds")}
        return super().diff(_id, olds, news)

    def overlay(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        out = super().overlay(props, live)
        out.update(stp=live["stp"], forward_delay=live["forward_delay"])
        if props.get("addresses") is not None:  # kept addresses are not this stack's: no drift
            out["addresses"] = live["addresses"]
        return out

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        forget(agent)
        live = agent.call("bridge.create", self.spec(props))
        try:
            return self.overlay(props, self._readdressed(agent, props, live))
        except Exception:
            if live.get("adopted"):  # a create that failed leaves the bridge as it found it
                self._release(props, quietly=True)
            raise

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        forget(agent)
        return self.overlay(
            news, self._readdressed(agent, news, agent.call("bridge.update", self.spec(news)))
        )

    def _readdressed(
        self, agent: AgentSession, props: dict[str, Any], live: dict[str, Any]
    ) -> dict[str, Any]:
        """An adopted bridge's addresses, given explicitly, are set under the host's rollback
        (the agent leaves them to this); a bridge of ours has them already."""
        want = props.get("addresses")
        if not live.get("adopted") or want is None or sorted(live["addresses"]) == sorted(want):
            return live
        args = {"owner": props["owner"], "name": props["name"], "addresses": want}

        def after(session: AgentSession) -> dict[str, Any]:
            return dict(session.call("link.read", {"name": props["name"]}))

        done = protected(props, "adopted.readdress", args, props["name"], after)
        return done if "ifindex" in done else dict(agent.call("link.read", {"name": props["name"]}))

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        if not props.get("adopt"):
            return super().host_delete(agent, props)
        forget(agent)  # an adopted bridge is released: given back what it had
        self._release(props)

    def _release(self, props: dict[str, Any], quietly: bool = False) -> None:
        args = {"owner": props["owner"], "name": props["name"]}
        try:
            protected(props, "adopted.release", args, props["name"], lambda session: {})
        except Exception:
            if not quietly:
                raise


class TapPortProvider(_LinkProvider):
    kind = "TapPort"
    link_kind = "tun"
    agent_ops = "tap"
    fields = field_table(TapPortArgs)

    def spec(self, props: dict[str, Any]) -> dict[str, Any]:
        spec = super().spec(props)
        del spec["bridge_id"]  # the provider's business: the agent joins by name
        return spec

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if olds.get("bridge_id") is None and not is_unknown(news.get("bridge_id")):
            # A state that has no bridge id yet: that alone is no change (an update records it).
            olds = {**olds, "bridge_id": news.get("bridge_id")}
        return super().diff(_id, olds, news)

    def overlay(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        out = super().overlay(props, live)
        out.update(bridge=live["master"], multi_queue=live.get("multi_queue", False))
        if props.get("owner_user") is not None:
            out["owner_user"] = live.get("owner_user")
        return out


# Bridges this program declares, per host, so a tap naming an undeclared bridge fails at preview.
_declared_bridges: set[tuple[str, str]] = set()


class Bridge(DeclaredResource[BridgeArgs], module="kvmnet", name="Bridge"):
    provider_type = BridgeProvider

    name: pulumi.Output[str]
    ifindex: pulumi.Output[int]
    mac: pulumi.Output[str]
    addresses: pulumi.Output[list[str]]

    def __init__(
        self, resource_name: str, args: BridgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        _declared_bridges.add((args.connection.host, args.name))
        super().__init__(resource_name, args, opts)


class TapPort(DeclaredResource[TapPortArgs], module="kvmnet", name="TapPort"):
    provider_type = TapPortProvider

    name: pulumi.Output[str]
    bridge: pulumi.Output[str]
    ifindex: pulumi.Output[int]
    mac: pulumi.Output[str]

    def computed_inputs(self, resource_name: str, args: TapPortArgs) -> dict[str, object]:
        """The state keeps the bridge's name, and the id of a bridge this program declares."""
        bridge: pulumi.Input[str]
        bridge_id: pulumi.Input[str] | None = None
        if isinstance(args.bridge, pulumi.Resource):  # a Bridge or an UplinkBridge
            bridge = args.bridge.name  # type: ignore[attr-defined]
            if isinstance(args.bridge, (Bridge, UplinkBridge)):
                bridge_id = args.bridge.id
        else:
            key = (args.connection.host, args.bridge)
            if not args.external_bridge and key not in _declared_bridges:
                raise ConfigError(
                    f"TapPort {resource_name}: bridge",
                    f"no Bridge named {args.bridge!r} is declared "
                    f"in this stack for host {args.connection.host}; declare it first, pass the "
                    "Bridge resource, or set external_bridge=True",
                )
            bridge = args.bridge
        return {"bridge": bridge, "bridge_id": bridge_id}
