"""A real distribution end to end: the user's stack (stacks/Pulumi.debian-nat.yaml)
through the real engine on a lab host: a NAT network with DHCP, one Debian bookworm guest
booted from the cached image through a copy-on-write overlay and configured by cloud-init
(hostname, a user with a generated SSH key), the host's 2222 forwarded to its sshd. The
guest's `ready` (cloud-init's finished line, tcp 22) holds `up` until the guest can be used:
a resource of the program that depends on the guest runs `hostname` in it over the forward,
once, and `ssh -p 2222 user@<host>` from the lab's outside host works at its first try; then
destroy puts everything back.

Slow under TCG (cloud-init's first boot takes minutes): `pytest -m debian` runs it alone.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kvmnet_lab.hostconfig import host_props
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.debian_image import (
    CLOUD_INIT_FINISHED,
    debian_image_dir,
    file_sha256,
)
from kvmnet_lab.testing.guest import default_accel
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot
from kvmnet_lab.testing.stack import TestStack
from kvmnet_lab.toolchain import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.debian]

TEMPLATE = REPO_ROOT / "stacks" / "Pulumi.debian-nat.yaml"
GUEST = "deb1"
HOST_PORT = 2222
# cloud-init's keys_to_console prints the guest's new SSH host keys between these lines.
HOST_KEYS = re.compile(
    r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S
)


def user_stack_config(image: Path, public_key: str, lab: LabStatus) -> dict[str, Any]:
    """The template as a user fills it in, on the lab's first host."""
    text = TEMPLATE.read_text()
    text = text.replace("@DEBIAN_IMAGE@", str(image)).replace("@SSH_PUBLIC_KEY@", public_key)
    config: dict[str, Any] = yaml.safe_load(text)["config"]
    config["kvmnet:host"] = host_props(lab.hosts[0])
    config["kvmnet:accelerator"] = default_accel()  # KVM spins on these machines: TCG
    return config


@pytest.fixture()
def client_key(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvmnet-e2e", "-f", str(key)],
        check=True,
    )
    return key


# The repository's program, and after it a resource of this test's that needs the guest ready:
# it runs a command in the guest over the port forward, one try, the guest's SSH host keys
# pinned from its console (cloud-init prints them there).
PROGRAM = f"""\
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from kvmnet_provider.program import build


class GuestCommandProvider(ResourceProvider):
    def create(self, props):
        import re, tempfile, paramiko  # in the provider's process
        console = open(props["console_log"], errors="replace").read()
        keys = re.search(props["keys_pattern"], console, re.S).group(1).split("\\n")
        port = int(props["port"])  # a number in the engine's wire: a float here
        where = "[" + props["host"] + "]:" + str(port)
        with tempfile.NamedTemporaryFile("w", suffix=".known_hosts") as known:
            known.write("".join(where + " " + k.strip() + "\\n" for k in keys if k.strip()))
            known.flush()
            client = paramiko.SSHClient()
            client.load_host_keys(known.name)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(props["host"], port=port, username="user",
                       key_filename=props["key"], timeout=10, allow_agent=False,
                       look_for_keys=False)
        try:
            _, out, _ = client.exec_command(props["command"], timeout=30)
            said = out.read().decode().strip()
        finally:
            client.close()
        return CreateResult(id_=props["command"], outs={{**props, "stdout": said}})


class GuestCommand(Resource):
    stdout: pulumi.Output[str]

    def __init__(self, name, props):
        super().__init__(GuestCommandProvider(), name, {{"stdout": None, **props}})


(network,) = build()[None]["networks"].values()
cfg = pulumi.Config("debiantest")
hostname = GuestCommand("{GUEST}-hostname", {{
    "host": cfg.require("host"), "port": {HOST_PORT}, "key": cfg.require("key"),
    "console_log": network["guests"]["{GUEST}"]["console_log"],  # the guest's own output
    "command": "hostname", "keys_pattern": {HOST_KEYS.pattern!r},
}})
pulumi.export("{GUEST}_hostname", hostname.stdout)
"""


@pytest.fixture()
def debian_stack(tmp_path: Path, lab: LabStatus, client_key: Path) -> Iterator[TestStack]:
    public_key = client_key.with_suffix(".pub").read_text().strip()
    config = user_stack_config(debian_image_dir(), public_key, lab)
    config |= {"debiantest:host": lab.hosts[0].address, "debiantest:key": str(client_key)}
    stack = TestStack(tmp_path, PROGRAM, project="kvmnet", stack="debian")
    try:
        stack.config_values(config)
        yield stack
    finally:
        stack.remove()


def console_log(stack: TestStack) -> Path:
    (guest,) = [g for g in stack.resources("QemuGuest") if g["outputs"].get("name") == GUEST]
    return Path(guest["outputs"]["console_log"])


def wait_for_console(log: Path, pattern: re.Pattern[str], timeout: float) -> str:
    """The console text once `pattern` appears in it (cloud-init writes straight to it)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if pattern.search(text):
            return text
        time.sleep(2)
    raise AssertionError(f"{pattern.pattern!r} not on {log} within {timeout}s:\n{text[-3000:]}")


def known_hosts_from_console(console: str, host: str, path: Path) -> None:
    """Pin the guest's host keys as cloud-init printed them on the serial console, so ssh
    checks them (StrictHostKeyChecking=yes) instead of trusting the first answer."""
    found = HOST_KEYS.search(console)
    assert found, "cloud-init printed no SSH host keys on the console"
    keys = [line.strip() for line in found.group(1).splitlines() if line.strip()]
    assert keys, "empty SSH host key block on the console"
    path.write_text("".join(f"[{host}]:{HOST_PORT} {key}\n" for key in keys))


def ssh_from_outside(
    lab: LabStatus, key: Path, known_hosts: Path, command: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`ssh -p 2222 user@<host> COMMAND` from the lab's outside host, retried until sshd
    answers (it starts as cloud-init's last stages run)."""
    argv = [
        "ip", "netns", "exec", lab.ext.namespace,
        "ssh", "-p", str(HOST_PORT), "-i", str(key),
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        f"user@{lab.hosts[0].address}", command,
    ]  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
        )
        if proc.returncode == 0 or time.monotonic() >= deadline:
            return proc
        time.sleep(3)


def test_debian_guest_ssh_through_the_port_forward(
    debian_stack: TestStack, lab: LabStatus, lab_api: Lab, client_key: Path, tmp_path: Path
) -> None:
    image = debian_image_dir()
    base = image / "disk.qcow2"
    base_sum = file_sha256(base)
    host_ns = lab.hosts[0].namespace
    before = host_snapshot(lab_api, host_ns)

    debian_stack.up()
    outs = debian_stack.outputs()
    assert outs["guests"][GUEST]["address"] == "10.0.5.10"
    (qemu,) = [g["outputs"] for g in debian_stack.resources("QemuGuest")]
    disk, seed = Path(qemu["disk_path"]), Path(qemu["seed_path"])
    assert disk.parent.name == GUEST and seed.parent == disk.parent, (disk, seed)
    assert disk.is_file() and seed.stat().st_mode & 0o077 == 0, "the seed must be 0600"

    # up returned only once the guest was ready: the resource after it got in at once, and
    # so does ssh from the outside host, at its first try.
    assert outs[f"{GUEST}_hostname"] == GUEST
    console = wait_for_console(console_log(debian_stack), CLOUD_INIT_FINISHED, 5)
    known_hosts = tmp_path / "known_hosts"
    known_hosts_from_console(console, lab.hosts[0].address, known_hosts)
    result = ssh_from_outside(lab, client_key, known_hosts, "hostname", 0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == GUEST
    # The guest's address came from dnsmasq's static lease, its route from the same lease.
    routes = ssh_from_outside(lab, client_key, known_hosts, "ip -4 route show default", 60)
    assert "via 10.0.5.1" in routes.stdout, routes.stdout + routes.stderr
    debian_stack.refresh()
    (server,) = debian_stack.resources("DhcpServer")
    leased = {lease["mac"]: lease["address"] for lease in server["outputs"]["leases"]}
    assert "10.0.5.10" in leased.values(), leased

    debian_stack.destroy()
    assert not disk.exists() and not seed.exists(), "destroy left the overlay or the seed"
    after = host_snapshot(lab_api, host_ns)
    assert after == before, diff_snapshots(before, after)
    assert file_sha256(base) == base_sum, f"the base image {base} changed"
