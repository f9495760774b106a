"""Test helpers: tiny QEMU guests and their serial console."""

from kvmnet_lab.testing.console import CommandResult, GuestConsole
from kvmnet_lab.testing.guest import (
    GuestNic,
    default_accel,
    guest_image_dir,
    qemu_argv,
    start_guest,
    stop_guest,
)

__all__ = [
    "CommandResult",
    "GuestConsole",
    "GuestNic",
    "default_accel",
    "guest_image_dir",
    "qemu_argv",
    "start_guest",
    "stop_guest",
]
