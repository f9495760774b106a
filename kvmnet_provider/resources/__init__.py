"""kvmnet's dynamic resources (type tokens pulumi-python:dynamic/kvmnet:*)."""

from .links import Bridge, BridgeArgs, TapPort, TapPortArgs
from .netfilter import (
    ForwardingSetting,
    ForwardingSettingArgs,
    MasqueradeRule,
    MasqueradeRuleArgs,
)

__all__ = [
    "Bridge",
    "BridgeArgs",
    "ForwardingSetting",
    "ForwardingSettingArgs",
    "MasqueradeRule",
    "MasqueradeRuleArgs",
    "TapPort",
    "TapPortArgs",
]
