"""A network's NetworkCheck: its `verify` and `verify_target` settings checked, and the check
declared after every other resource of the network (resources/network_check.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi

from ..errors import ConfigError, config_path
from ..resources.base import owner_id
from ..resources.dhcp import DhcpServer
from ..resources.forward_rules import ForwardRules
from ..resources.network_check import NetworkCheck, NetworkCheckArgs
from ..spec import dhcp as dhcp_spec
from ..spec import verify
from ..spec.models import MODELS
from ..spec.validate import InvalidInput

if TYPE_CHECKING:
    from .networks import NetworkArgs, _Network


def verify_enabled(resource_name: str, model: str, args: NetworkArgs) -> bool:
    """Whether the network is verified (ConfigError naming the key when it cannot be)."""

    def key(name: str) -> str:
        return config_path(args.config_key, name) if args.config_key else f"{resource_name}: {name}"

    if args.verify is not None and not isinstance(args.verify, bool):
        raise ConfigError(key("verify"), f"must be true or false, got {args.verify!r}")
    if args.verify_target is not None:
        try:
            verify.target(args.verify_target)
        except InvalidInput as exc:
            raise ConfigError(key("verifyTarget"), str(exc)) from None
    if args.verify and model not in verify.VERIFIABLE:
        raise ConfigError(
            key("verify"),
            f"a {model} network cannot be verified yet (its LAN is not kvmnet's); leave verify "
            "unset (or false)",
        )
    on = verify.enabled(model, args.verify)
    if not isinstance(args.verify_on_refresh, bool):
        raise ConfigError(
            key("verifyOnRefresh"), f"must be true or false, got {args.verify_on_refresh!r}"
        )
    if args.verify_on_refresh and not on:
        raise ConfigError(
            key("verifyOnRefresh"),
            f"needs the network verified (verify is off for this {model} network)",
        )
    return on


def network_check(network: _Network, resource_name: str) -> NetworkCheck:
    """The NetworkCheck of `network`, after its bridge, rules, DHCP, taps and guests."""
    args, model = network.args, network.model
    routed = MODELS[model].bridge_address
    rules = next(r for r in network.extras if isinstance(r, ForwardRules))
    # What the check follows besides its own settings: which guests there are and the rules.
    # Not PIDs or ifindexes: a restore at boot makes them anew, and Pulumi must agree then.
    watch: dict[str, Any] = {"guests": sorted(network.guests), "rules": rules.rules}
    dhcp_range = dns_name = dns_address = input_rules = None
    server: DhcpServer | None = network.dhcp
    if server is not None:
        dhcp_range = list(args.dhcp_range or dhcp_spec.default_range(args.subnet, args.gateway))
        # A guest with a static lease is in DNS from the start; one leased from the range only
        # once it booted, which up does not wait for.
        named = next((g for g in args.guests if g.address), None)
        if named is not None:
            dns_name, dns_address = f"{named.name}.{args.domain}", named.address
        input_rules = {
            "owner": owner_id("DhcpServer", f"{resource_name}-dhcp"),
            "backend": server.backend,
            "bridge": network.bridge.name,
            "address": args.gateway,
            "subnet": args.subnet,
        }
    forwards = None
    if MODELS[model].nat and args.port_forwards:
        addresses = {g.name: g.address for g in args.guests}
        forwards = [
            {
                "protocol": f.protocol,
                "host_port": f.host_port,
                "guest_address": addresses[f.guest],
                "guest_port": f.guest_port,
                "in_interface": args.uplink,
            }
            for f in args.port_forwards
            if addresses.get(f.guest)
        ]
    return NetworkCheck(
        f"{resource_name}-verify",
        NetworkCheckArgs(
            connection=args.connection,
            network=resource_name,
            model=model,
            bridge=network.bridge.name,
            subnet=args.subnet,
            gateway=args.gateway if routed else None,
            target=args.verify_target,
            taken=sorted({g.address for g in args.guests if g.address}),
            dhcp_range=dhcp_range,
            dns_name=dns_name,
            dns_address=dns_address,
            rules={
                "owner": owner_id("ForwardRules", f"{resource_name}-forward-rules"),
                "backend": rules.backend,
                "mode": model,
                "bridge": network.bridge.name,
                "subnet": args.subnet if routed else None,
                **rule_forwards(forwards),
            },
            input_rules=input_rules,
            forwards=forwards or None,
            on_refresh=True if args.verify_on_refresh else None,  # None: as older states
            watch=watch,
        ),
        pulumi.ResourceOptions(
            parent=network,
            depends_on=[
                network.bridge,
                *network.extras,
                *network.taps.values(),
                *network.guests.values(),
            ],
        ),
    )


def rule_forwards(forwards: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The forwards as ForwardRules holds them (so forward.read judges the rules it made);
    nothing without forwards."""
    if not forwards:
        return {}
    return {
        "forwards": [
            {"guest": f["guest_address"], "port": f["guest_port"], "proto": f["protocol"]}
            for f in forwards
        ]
    }
