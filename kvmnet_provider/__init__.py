"""kvmnet: a Pulumi dynamic provider that builds the networks of KVM hosts over SSH.

The public API, for a Pulumi program of your own:

    from kvmnet_provider import GuestSpec, HostSettings, NatNetwork, NetworkArgs

    host = HostSettings(host="kvm1.example.net", user="root")
    NatNetwork("net", NetworkArgs(connection=host, subnet="10.0.1.0/24", gateway="10.0.1.254",
                                  guests=[GuestSpec(name="g1", tap="vif1.0",
                                                    mac="52:54:00:00:01:01", disks=[...])]))

The models (`models`) compose the resources (`resources`: Bridge, TapPort, QemuGuest, ...),
which talk to a host agent (`agent`, shipped over SSH by `connection`); `spec` holds the rules
both sides check. Names are loaded at first use, so the agent's and the spec's modules import
without Pulumi.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cloudinit import CloudInit
    from .connection.settings import HostSettings
    from .models import (
        BridgedNetwork,
        GuestSpec,
        IsolatedNetwork,
        NatNetwork,
        NetworkArgs,
        PortForwardSpec,
        RoutedNetwork,
    )

    Host = HostSettings

_WHERE = {
    "CloudInit": ".cloudinit",
    "HostSettings": ".connection.settings",
    "Host": ".connection.settings",
    "BridgedNetwork": ".models",
    "GuestSpec": ".models",
    "IsolatedNetwork": ".models",
    "NatNetwork": ".models",
    "NetworkArgs": ".models",
    "PortForwardSpec": ".models",
    "RoutedNetwork": ".models",
}

__all__ = [
    "BridgedNetwork",
    "CloudInit",
    "GuestSpec",
    "Host",
    "HostSettings",
    "IsolatedNetwork",
    "NatNetwork",
    "NetworkArgs",
    "PortForwardSpec",
    "RoutedNetwork",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(where, __name__)
    return getattr(module, "HostSettings" if name == "Host" else name)
