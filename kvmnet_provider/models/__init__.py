"""The four network models as ComponentResources composed from kvmnet's resources."""

from .networks import (
    BridgedNetwork,
    GuestReady,
    GuestSpec,
    IsolatedNetwork,
    NatNetwork,
    NetworkArgs,
    PortForwardSpec,
    RoutedNetwork,
    network_for_model,
)

__all__ = [
    "BridgedNetwork",
    "GuestReady",
    "GuestSpec",
    "IsolatedNetwork",
    "NatNetwork",
    "NetworkArgs",
    "PortForwardSpec",
    "RoutedNetwork",
    "network_for_model",
]
