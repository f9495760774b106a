"""What a key left out of stack config means, for the one-host program and for every network of
a fleet alike. Where the library's NetworkArgs and GuestSpec have a default, the program takes
theirs, so a network declared from stack config is one declared in Python with the same keys.
"""

from __future__ import annotations

from typing import Any

from ..models import GuestSpec, NetworkArgs

NS = "kvmnet"  # the stack config namespace: kvmnet:model, kvmnet:hosts, ...
MODEL = "nat"
NETWORK_NAME = "net"  # the one-host program's network: its resources are net-bridge, net-g1, ...
BRIDGE = NetworkArgs.bridge
SUBNET = NetworkArgs.subnet
# The guests' default route: the bridge's address on routed and NAT networks, the LAN's router
# on a bridged one (isolated guests have none). NetworkArgs has no default: a library program
# must say where its gateway is.
GATEWAY = "10.0.1.254"
ROLLBACK_SECONDS = NetworkArgs.rollback_seconds
ACCELERATOR = NetworkArgs.accelerator
GUEST_STOP_TIMEOUT = GuestSpec.stop_timeout
GUEST_MEMORY_MIB = GuestSpec.memory_mib
# The one-host program's guests when its stack lists none: two test guests.
GUESTS: tuple[dict[str, Any], ...] = (
    {"name": "g1", "address": "10.0.1.11"},
    {"name": "g2", "address": "10.0.1.12"},
)
