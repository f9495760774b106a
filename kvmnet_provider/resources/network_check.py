"""NetworkCheck: a network proves its model's row from the guests' side (network.verify).

After every other resource of its network, a short-lived probe on the bridge (agent/verify/)
checks what the model promises: the gateway answers (routed, NAT), the outside target is
reached (NAT) or not (routed, isolated), the network's DNS knows a guest and its DHCP offers
an address (when it runs); and from a second probe, a neighbour routing the subnet via the
host, the way in: let in (routed) or refused (NAT), except each NAT port forward, which must
take it to its guest. A mismatch fails `up` with one line: the host, the network, the
check, why, and the fix (naming the foreign rule that stopped it when the firewall finds one).

The check runs at create, and again at an update: when the network's settings change, or
when `watch` does (the network's guests, its forward rules). A read keeps the last result,
unless `on_refresh` asks it to probe again: then a failure is the check's drift (its `failing`
output names it, and `watch` differs from the program's so the next `up` checks once more).
Delete changes nothing on the host (the probe never outlives its check).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pulumi

from ..connection import HostSettings
from ..connection.session import AgentSession
from ..errors import KvmnetError
from ..spec import dhcp, validate, verify
from .base import KvmnetProvider, host_key, list_of
from .declare import DeclaredResource, declaration, field_table, kvmnet_field

VERIFY_TIMEOUT = 120.0
NOT_FOR_THE_AGENT = ("network", "watch", "on_refresh")
LAST_RESULT = ("passed", "checks", "probe", "checked_target", "checked_at")


def _model(value: Any) -> str:
    if value not in verify.VERIFIABLE:
        raise validate.InvalidInput(f"must be one of {', '.join(verify.VERIFIABLE)}, got {value!r}")
    return str(value)


def _anything(value: Any) -> Any:
    return value


def _forwards(value: Any) -> list[dict[str, Any]] | None:
    return verify.forwards(value) or None  # none: no input at all (no change to older state)


@declaration
class NetworkCheckArgs:
    connection: HostSettings
    network: str = kvmnet_field(_anything)  # the network's resource name, for messages
    model: str = kvmnet_field(_model)
    bridge: pulumi.Input[str] = kvmnet_field(validate.ifname)
    subnet: str = kvmnet_field(validate.network)
    gateway: str | None = kvmnet_field(validate.ipv4_address, default=None)
    # ADDRESS (ICMP echo) or ADDRESS:PORT (TCP connect); None: the host's default gateway
    target: str | None = kvmnet_field(verify.target, default=None)
    # addresses the probe must not take (the guests'); with DHCP, its range too
    taken: Sequence[str] = kvmnet_field(
        list_of(validate.ipv4_address), default_factory=list, prop=list
    )
    dhcp_range: Sequence[str] | None = kvmnet_field(dhcp.dhcp_range, default=None, prop=list)
    dns_name: str | None = kvmnet_field(dhcp.domain, default=None)
    dns_address: str | None = kvmnet_field(validate.ipv4_address, default=None)
    # the firewall reads that name a foreign rule when a check fails (forward.read, input.read)
    rules: pulumi.Input[dict[str, Any]] | None = kvmnet_field(_anything, default=None)
    input_rules: pulumi.Input[dict[str, Any]] | None = kvmnet_field(_anything, default=None)
    # NAT: the port forwards the outside probe tries (verify.forwards)
    forwards: Sequence[dict[str, Any]] | None = kvmnet_field(_forwards, default=None)
    # True: a read (pulumi refresh) probes again instead of keeping the last result
    on_refresh: bool | None = kvmnet_field(validate.boolean, default=None)
    # outputs of the resources checked: a change of any runs the check again
    watch: pulumi.Input[dict[str, Any]] | None = kvmnet_field(_anything, default=None)


FIXES = {
    "gateway": "the host's INPUT drops the bridge's traffic: let it in (see kvmnet's DHCP/DNS "
    "rules), then run up again",
    "outside": "check the host's route to the target and kvmnet's masquerade, or set "
    "verifyTarget to an address:port the host itself reaches",
    "outside-leak": "something besides kvmnet forwards or masquerades this subnet (a foreign NAT "
    "rule?): remove it, or set verify: false",
    "inbound": "the host does not forward a neighbour's traffic into the subnet: check its "
    "forwarding and kvmnet's forward rules (pulumi refresh), then run up again",
    "inbound-leak": "a rule besides kvmnet's lets the outside into this subnet (an ACCEPT before "
    "kvmnet's jump, or kvmnet's jump missing): remove it, or pulumi refresh and up",
    "forwards": "see the network's PortForward and forward rules (pulumi refresh), then run up "
    "again",
    "dns": "dnsmasq does not answer for the guest: see the network's DhcpServer problems "
    "(pulumi refresh), then run up again",
    "dhcp": "dnsmasq offers no lease: see the network's DhcpServer problems (pulumi refresh), "
    "then run up again",
    "blocked": "delete that rule or move it below kvmnet's jump, then run up again",
    "firewalld": "put the bridge in a firewalld zone that accepts it: firewall-cmd --permanent "
    "--zone=trusted --add-interface={bridge} (a routed network also needs a policy into that "
    "zone, docs/operations.md), then firewall-cmd --reload and run up again",
}


def failure_line(host: str, result: dict[str, Any], props: dict[str, Any]) -> str | None:
    """The one line `up` fails with, or None when every check matched the model."""
    failed = [c for c in result.get("checks") or [] if not c.get("ok")]
    if not failed:
        return None
    first = failed[0]
    check, reason = str(first["check"]), str(first["reason"])
    blocked = result.get("blocked_by")
    if "must not" in reason:  # a leak: `blocked` names the rule that lets it in, or what is
        # wrong with kvmnet's own rules
        cause = f"{reason}; {blocked}" if blocked else reason
        named = str(blocked or "").startswith("let in by ")
        fix = FIXES["blocked"] if named else FIXES.get(f"{check}-leak", "see docs/operations.md")
    elif blocked:
        firewalld = str(blocked).startswith(verify.FIREWALLD_BLAME)
        how = FIXES["firewalld"].format(bridge=props.get("bridge")) if firewalld else None
        cause, fix = f"{reason}; blocked by {blocked}", how or FIXES["blocked"]
    else:
        cause, fix = reason, FIXES.get(check, "see docs/operations.md (verify)")
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return (
        f"{host}: network {props['network']} ({props['model']}): verify {check} failed{more}: "
        f"{cause}; fix: {fix}"
    )


def skipped_on_switch(olds: dict[str, Any], news: dict[str, Any]) -> tuple[str, ...]:
    """NAT to routed: the engine deletes the old masquerade only after this check, so the
    outside would still answer; that one check waits for the next change."""
    return ("outside",) if (olds.get("model"), news.get("model")) == ("nat", "routed") else ()


class NetworkCheckProvider(KvmnetProvider):
    kind = "NetworkCheck"
    fields = field_table(NetworkCheckArgs)

    def resource_id(self, props: dict[str, Any]) -> str:
        return f"{host_key(props)}/verify/{props['bridge']}"

    def _probe(
        self, agent: AgentSession, props: dict[str, Any], skip: tuple[str, ...] = ()
    ) -> tuple[dict[str, Any], str | None]:
        """The check's outputs, and its one-line failure (None: it passed)."""
        spec = {n: props.get(n) for n in self.fields if n not in NOT_FOR_THE_AGENT}
        spec["skip"] = list(skip)
        result = agent.call("network.verify", {"owner": props["owner"], **spec}, VERIFY_TIMEOUT)
        return {
            "passed": [c["check"] for c in result["checks"] if c.get("ok") and c.get("ran", True)],
            "checks": result["checks"],
            "probe": result.get("probe"),
            "checked_target": result.get("target"),
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }, failure_line(props["connection"]["host"], result, props)

    def _verify(
        self, agent: AgentSession, props: dict[str, Any], skip: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        outputs, line = self._probe(agent, props, skip)
        if line:
            raise KvmnetError(line)
        return outputs

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        return self._verify(agent, props)

    def host_read(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any] | None:
        if not props.get("on_refresh"):
            return {k: props.get(k) for k in LAST_RESULT}  # a read does not probe
        outputs, line = self._probe(agent, props)
        if line is None:
            return {**outputs, "failing": None}
        # Drift: the failure is an output, and `watch` no longer matches the program's, so
        # the next `up` runs the check again (and fails with this line until it is fixed).
        watch = {**(props.get("watch") or {}), "failing at refresh": outputs["checked_at"]}
        return {**outputs, "failing": line, "watch": watch}

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        return self._verify(agent, news, skipped_on_switch(olds, news))

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        return None  # nothing of a check stays on the host


class NetworkCheck(DeclaredResource[NetworkCheckArgs], module="kvmnet", name="NetworkCheck"):
    provider_type = NetworkCheckProvider

    passed: pulumi.Output[list[str]]
    checks: pulumi.Output[list[dict[str, Any]]]
    probe: pulumi.Output[dict[str, Any]]
    checked_target: pulumi.Output[str]
    checked_at: pulumi.Output[str]
    failing: pulumi.Output[str | None]  # with on_refresh: the last refresh's failure


__all__ = ["NetworkCheck", "NetworkCheckArgs", "NetworkCheckProvider"]
