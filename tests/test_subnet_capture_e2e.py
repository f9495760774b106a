"""A network that would capture the host's own traffic is refused at `up`, host untouched:
one inside the lab host's LAN prefix (its replies to the LAN would go into the bridge), one
containing the operator's address (the SSH session's replies would). The real engine, the
stack program, a lab host over SSH."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack, config_stack

pytestmark = pytest.mark.e2e


@pytest.fixture()
def routed_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    config = lab_stack_config(lab, model="routed", image_dir=guest_image_dir())
    with config_stack(tmp_path, "capture", {**config, "kvmnet:accelerator": "tcg"}) as stack:
        yield stack


def refused_up(stack: TestStack, lab: LabStatus, lab_api: Lab, subnet: str) -> str:
    """`up` of the routed model on `subnet` (gateway its first address): fails, and leaves
    the host as it was. The failure's text."""
    net = ipaddress.ip_network(subnet)
    guests = [{"name": "g1", "address": str(net[2])}]
    stack.config_values(
        {"kvmnet:subnet": subnet, "kvmnet:gateway": str(net[1]), "kvmnet:guests": guests}
    )
    namespace = lab.hosts[0].namespace
    before = host_snapshot(lab_api, namespace)
    proc = stack.up(check=False)
    text = str(proc.stdout) + str(proc.stderr)
    assert proc.returncode != 0, text
    assert "Traceback" not in text, text
    after = host_snapshot(lab_api, namespace)
    assert after == before, "\n".join(diff_snapshots(before, after))
    return text


def test_a_routed_network_inside_the_hosts_lan_is_refused(
    routed_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    lan = ipaddress.ip_network(lab.lan)
    inside = list(lan.subnets(new_prefix=26))[1]  # not the operator's quarter
    text = refused_up(routed_stack, lab, lab_api, str(inside))
    host_cidr = f"{lab.hosts[0].address}/{lan.prefixlen}"
    line = f"{inside[1]}/26: network {inside} overlaps {lan} of eth0 ({host_cidr})"
    assert line in text, text
    assert "give this bridge a subnet apart from the host's networks" in text, text


def test_a_network_containing_the_operators_address_is_refused(
    routed_stack: TestStack, lab: LabStatus, lab_api: Lab
) -> None:
    around = ipaddress.ip_network(f"{lab.operator_address}/28", strict=False)
    text = refused_up(routed_stack, lab, lab_api, str(around))
    line = (
        f"network {around} contains {lab.operator_address}, the address kvmnet's SSH session "
        "comes from"
    )
    assert line in text, text
