"""kvmnet's dynamic resources (type tokens pulumi-python:dynamic/kvmnet:*)."""

from .forward_rules import ForwardRules, ForwardRulesArgs
from .guest import GuestDiskArgs, GuestNicArgs, GuestReady, QemuGuest, QemuGuestArgs
from .links import Bridge, BridgeArgs, TapPort, TapPortArgs
from .netfilter import (
    ForwardingSetting,
    ForwardingSettingArgs,
    MasqueradeRule,
    MasqueradeRuleArgs,
    PortForward,
    PortForwardArgs,
)

__all__ = [
    "Bridge",
    "BridgeArgs",
    "ForwardingSetting",
    "ForwardingSettingArgs",
    "ForwardRules",
    "ForwardRulesArgs",
    "GuestDiskArgs",
    "GuestNicArgs",
    "GuestReady",
    "MasqueradeRule",
    "MasqueradeRuleArgs",
    "PortForward",
    "PortForwardArgs",
    "QemuGuest",
    "QemuGuestArgs",
    "TapPort",
    "TapPortArgs",
]
