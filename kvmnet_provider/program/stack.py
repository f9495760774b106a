"""The stack program's entry: check the stack's keys, declare each host's networks, export.

The one-host program exports its network's outputs at the top level (model, host, bridge,
bridge_addresses or uplink_addresses, port_forwards, guests, leases); a fleet exports
`model: fleet` and `hosts: {NAME: {host, networks: {NETWORK: the same outputs}}}`.
"""

from __future__ import annotations

from typing import Any

import pulumi

from ..models import network_for_model
from .defaults import NS
from .hosts import Host, read_hosts
from .keys import check_stack_keys, check_structured_keys, stack_config_keys
from .outputs import network_outputs


def build() -> dict[str | None, dict[str, Any]]:
    """Declare the stack config's hosts and networks and export their outputs; the outputs
    per host name (None: the one-host program), for a program that builds on them."""
    cfg = pulumi.Config(NS)
    check_stack_keys(stack_config_keys())  # a typo'd key fails instead of being ignored
    check_structured_keys(cfg)
    hosts = read_hosts(cfg)
    exported = {host.name: declare(host) for host in hosts}
    if hosts[0].name is None:  # the one-host program: its one network's outputs at the top
        (outputs,) = exported[None]["networks"].values()
        pulumi.export("host", exported[None]["host"])
        for key, value in outputs.items():
            pulumi.export(key, value)
        return exported
    pulumi.export("model", "fleet")
    pulumi.export("hosts", exported)
    return exported


def declare(host: Host) -> dict[str, Any]:
    """Declare `host`'s networks; its outputs: {host, networks: {name: outputs}}."""
    networks = {}
    for net in host.networks:
        network = network_for_model(net.model)(net.resource_name, net.args)
        networks[net.name] = network_outputs(network)
    return {"host": host.connection.host, "networks": networks}
