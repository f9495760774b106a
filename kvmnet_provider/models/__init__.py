"""The four network models as ComponentResources composed from kvmnet's resources."""

from .networks import (
    BridgedNetwork,
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
    "GuestSpec",
    "IsolatedNetwork",
    "NatNetwork",
    "NetworkArgs",
    "PortForwardSpec",
    "RoutedNetwork",
    "network_for_model",
]
