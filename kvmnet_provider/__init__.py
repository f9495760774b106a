"""kvmnet: a Pulumi dynamic provider for KVM host networking over SSH.

Resources live in `kvmnet_provider.resources`, network models in `kvmnet_provider.models`.
This module stays import-light: the host agent and the lab import parts of the package
without Pulumi.
"""

from .connection.settings import HostSettings

Host = HostSettings

__all__ = ["Host", "HostSettings"]
