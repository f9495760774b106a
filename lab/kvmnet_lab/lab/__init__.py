"""The kvmnet lab: fake remote KVM hosts made of network namespaces, each with its own sshd.

>>> from kvmnet_lab.lab import Lab
>>> lab = Lab("kvmnet", "/run/kvmnet-lab/kvmnet")
>>> status = lab.up(hosts=2)  # LabStatus; idempotent
>>> lab.exec_in("h1", ["ip", "-j", "addr"], capture_output=True)
>>> lab.down()
"""

from .core import (
    DEFAULT_NAME,
    Lab,
    LabError,
    LabNotUp,
    SubnetConflict,
    default_name,
    default_state_dir,
    fresh_lab,
)
from .naming import ECHO_PORT, SSH_PORT, LabNames, subnet_octet
from .sshclient import connect_host, open_client, run_command, ssh_reachable
from .state import ExtStatus, HostStatus, LabStatus

__all__ = [
    "fresh_lab",
    "DEFAULT_NAME",
    "ECHO_PORT",
    "SSH_PORT",
    "ExtStatus",
    "HostStatus",
    "Lab",
    "LabError",
    "LabNames",
    "LabNotUp",
    "LabStatus",
    "SubnetConflict",
    "connect_host",
    "default_name",
    "default_state_dir",
    "open_client",
    "run_command",
    "ssh_reachable",
    "subnet_octet",
]
