"""SSH to a host: host keys, credentials, failures in bounded time, secrets, a sudo user.

Provider-level cases call kvmnet_provider.connection.agent_session directly; the host-key
mismatch, the wrong key and the secret key are also shown through the real `pulumi up`.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import HostStatus, Lab, LabStatus, fresh_lab
from kvmnet_lab.testing.debian_python import debian_python
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
from kvmnet_lab.testing.stack import TestStack

from kvmnet_provider.connection import HostError, HostSettings, agent_session
from kvmnet_provider.connection.tcp import QuickAckSocket

pytestmark = pytest.mark.e2e

VENV_PY = sys.executable


def settings(h: HostStatus, **kw: Any) -> HostSettings:
    return dataclasses.replace(host_settings(h, VENV_PY), **{"connect_timeout": 5.0, **kw})


def host_key_of(host: HostStatus) -> str:
    """'ssh-ed25519 AAAA...' of the host, from the lab's known_hosts."""
    for line in Path(host.known_hosts).read_text().splitlines():
        name, key_type, blob = line.split()[:3]
        if name == host.address:
            return f"{key_type} {blob}"
    raise KeyError(host.address)


def connect_error(s: HostSettings) -> HostError:
    with pytest.raises(HostError) as caught:
        agent_session(s)
    return caught.value


@pytest.fixture
def h1(lab: LabStatus) -> HostStatus:
    return lab.hosts[0]


@pytest.fixture
def mismatched_known_hosts(tmp_path: Path, lab: LabStatus) -> Path:
    """A known_hosts file that gives h1's address the host key of h2."""
    path = tmp_path / "known_hosts_mismatch"
    path.write_text(f"{lab.hosts[0].address} {host_key_of(lab.hosts[1])}\n")
    return path


@pytest.fixture
def stranger_key(tmp_path: Path) -> Path:
    """A freshly generated key that no host authorises."""
    path = tmp_path / "stranger_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f", str(path)],
        check=True,
    )
    return path


# --- provider level --------------------------------------------------------------------------
def test_changed_host_key_is_refused(h1: HostStatus, mismatched_known_hosts: Path) -> None:
    err = str(connect_error(settings(h1, known_hosts=str(mismatched_known_hosts))))
    assert "host key CHANGED" in err and h1.address in err, err
    assert "refusing to connect" in err and "known_hosts" in err, err
    assert "\n" not in err


def test_unknown_host_is_refused_with_how_to_trust(h1: HostStatus, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    err = str(connect_error(settings(h1, known_hosts=str(empty))))
    assert "host key unknown" in err and h1.address in err, err
    assert f"ssh-keyscan -p 22 {h1.address} >> {empty}" in err, err
    assert "host_key" in err and "\n" not in err, err


def test_wrong_key_file_is_refused(h1: HostStatus, stranger_key: Path) -> None:
    err = str(connect_error(settings(h1, private_key_path=str(stranger_key))))
    assert f"root@{h1.address}:22: authentication refused" in err, err
    assert str(stranger_key) in err and "\n" not in err
    assert stranger_key.read_text().splitlines()[1] not in err


def test_unreachable_address_fails_within_timeout(lab: LabStatus, h1: HostStatus) -> None:
    nobody = str(ipaddress.ip_network(lab.lan)[250])  # in the lab's LAN, owned by no one
    start = time.monotonic()
    err = str(connect_error(settings(h1, host=nobody, connect_timeout=1.5)))
    elapsed = time.monotonic() - start
    assert elapsed < 1.5 + 2.0, elapsed
    assert err.startswith(f"root@{nobody}:22: "), err
    assert "timed out" in err or "unreachable" in err, err
    assert "\n" not in err


def test_pinned_host_key_works_without_known_hosts(
    lab: LabStatus, h1: HostStatus, tmp_path: Path
) -> None:
    s = settings(h1, known_hosts=str(tmp_path / "absent"), host_key=host_key_of(h1))
    session = agent_session(s)
    try:
        assert session.call("ping", {})["pid"] == session.agent_pid
    finally:
        session.close()
    # a pinned key that is not the host's is refused, even though known_hosts has the right one
    err = str(connect_error(settings(h1, host_key=host_key_of(lab.hosts[1]))))
    assert "host key CHANGED" in err, err


def test_one_session_per_host_shared_by_threads(h1: HostStatus) -> None:
    s = settings(h1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        sessions = list(pool.map(lambda _: agent_session(s), range(8)))
        try:
            assert len({id(x) for x in sessions}) == 1
            pids = list(pool.map(lambda _: sessions[0].call("ping", {})["pid"], range(16)))
            assert set(pids) == {sessions[0].agent_pid}
        finally:
            sessions[0].close()


def test_session_socket_has_no_nagle_and_acks_at_once(h1: HostStatus) -> None:
    """The TCP under a session: no Nagle delay, and quick ACKs re-armed after every read
    (without them, login and the first channel open each stall on a delayed ACK)."""
    session = agent_session(settings(h1))
    sock = session.client.get_transport().sock  # type: ignore[union-attr]
    assert isinstance(sock, QuickAckSocket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    session.call("ping", {})  # reads went through the re-arming recv
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_concurrent_link_deletes_go_as_one_batch_and_each_caller_hears_its_own(
    h1: HostStatus, lab_api: Lab
) -> None:
    """Deletes waiting for the session leave in one request; the host deletes ours together,
    refuses the foreign tap to its own caller only, and reports the absent one as absent."""
    session = agent_session(settings(h1))
    owner = "test/batch/TapPort/"
    taps = [f"kbt{k}" for k in range(6)]
    session.call(
        "bridge.create",
        {"name": "kbat0", "owner": "test/batch/Bridge/b", "stp": False, "forward_delay": 0},
    )
    for tap in taps:
        session.call("tap.create", {"name": tap, "owner": owner + tap, "bridge": "kbat0"})
    run_in(lab_api, h1.name, ["ip", "tuntap", "add", "dev", "kbtx", "mode", "tap"])
    requests = [(t, owner + t) for t in taps] + [("kbtx", owner + "kbtx"), ("kbtnone", owner)]
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(requests)) as pool:
            with session.exclusive():  # hold the session: every delete queues behind it
                futures = {
                    name: pool.submit(
                        session.call_batched, "link.delete", {"name": name, "owner": who}
                    )
                    for name, who in requests
                }
                deadline = time.monotonic() + 10
                while len(session._queued.get("link.delete", [])) < len(requests):
                    assert time.monotonic() < deadline, "the deletes did not queue"
                    time.sleep(0.01)
            assert all(futures[t].result(timeout=30) == {"deleted": True} for t in taps)
            assert futures["kbtnone"].result(timeout=30) == {"deleted": False}
            with pytest.raises(HostError, match="kbtx is not ours"):
                futures["kbtx"].result(timeout=30)
        names = {x["ifname"] for x in json.loads(run_in(lab_api, h1.name, ["ip", "-j", "link"]))}
        assert not names & set(taps) and "kbtx" in names
    finally:
        run_in(lab_api, h1.name, ["ip", "link", "del", "kbtx"], check=False)
        session.call("link.delete", {"name": "kbat0", "owner": "test/batch/Bridge/b"})
        for tap in taps:
            run_in(lab_api, h1.name, ["ip", "link", "del", tap], check=False)


def test_missing_python_is_named(h1: HostStatus) -> None:
    err = str(connect_error(settings(h1, python="/nonexistent/bin/python3")))
    assert "/nonexistent/bin/python3" in err and h1.address in err, err
    assert "exited while starting the host agent" in err, err


def test_missing_components_are_named_with_how_to_install(
    h1: HostStatus, tmp_path: Path
) -> None:
    """A Python with nothing installed (a fresh venv of the system's python3, whatever the
    system has) as the host's Python."""
    bare = tmp_path / "bare"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python3")
    assert subprocess.run([python, "-c", "import pyroute2"], capture_output=True).returncode
    err = str(connect_error(settings(h1, python=python)))
    assert "the host lacks what kvmnet needs" in err, err
    assert "pyroute2" in err and "pip install pyroute2" in err, err
    assert "iptc" in err and "python-iptables" in err, err


# --- through the real engine -----------------------------------------------------------------
CONFIGURED = """
import pulumi
from kvmnet_provider.connection import HostSettings
from kvmnet_provider.resources import *

cfg = pulumi.Config()
c = HostSettings(host={address!r}, known_hosts=cfg.get("known_hosts") or {known_hosts!r},
                 private_key_path=cfg.get("key"), python={python!r})
br = Bridge("br", BridgeArgs(connection=c, name="br-conn", addresses=["10.0.5.1/24"]))
pulumi.export("ifindex", br.ifindex)
"""


def configured_program(h: HostStatus) -> str:
    return textwrap.dedent(CONFIGURED).format(
        address=h.address, known_hosts=h.known_hosts, python=VENV_PY
    )


def links_of(lab_api: Lab, ns: str) -> dict[str, dict[str, Any]]:
    return {x["ifname"]: x for x in json.loads(run_in(lab_api, ns, ["ip", "-j", "link"]))}


def nat_rules(lab_api: Lab, ns: str) -> str:
    return run_in(lab_api, ns, ["iptables-legacy-save", "-t", "nat"])


def up_check_destroy(
    lab_api: Lab, ns: str, stack: TestStack, check: Callable[[], None], before: dict[str, Any]
) -> None:
    """up, `check`, an empty second preview, destroy: the host ends as `before`."""
    try:
        stack.up()
        check()
        stack.preview_no_changes()
        stack.destroy()
    finally:
        stack.remove()
    after = host_snapshot(lab_api, ns)
    assert after == before, "\n".join(diff_snapshots(before, after))


def key_material(private_key: Path) -> list[str]:
    """The lines of a private key's base64 body (each is secret)."""
    return [
        line.strip()
        for line in private_key.read_text().splitlines()
        if line.strip() and not line.startswith("-----")
    ]


@pytest.fixture
def conn_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    stack = TestStack(tmp_path, configured_program(lab.hosts[0]), project="conn")
    try:
        yield stack
    finally:
        stack.remove()


def test_up_refuses_changed_host_key_and_wrong_key(
    conn_stack: TestStack,
    lab_api: Lab,
    h1: HostStatus,
    mismatched_known_hosts: Path,
    stranger_key: Path,
) -> None:
    before = host_snapshot(lab_api, h1.namespace)
    conn_stack.config("known_hosts", str(mismatched_known_hosts))
    conn_stack.config("key", h1.private_key)
    failed = conn_stack.up(check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert f"root@{h1.address}:22: host key CHANGED" in text, text

    conn_stack.pulumi("config", "rm", "known_hosts")
    conn_stack.config("key", str(stranger_key))
    failed = conn_stack.up(check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert f"root@{h1.address}:22: authentication refused (credentials from key file" in text
    assert not any(line in text for line in key_material(stranger_key))
    assert host_snapshot(lab_api, h1.namespace) == before
    assert not conn_stack.resources("kvmnet:Bridge")


B64_RUN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def with_decoded_blobs(text: str, depth: int = 2) -> str:
    """The text and every base64 blob in it decoded (the pickled provider in the state is
    one: a secret pickled into it would not show as text), blobs within blobs too."""
    parts = [text]
    if depth:
        for match in B64_RUN.finditer(text):
            blob = match.group(0)
            try:
                raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
            except ValueError:
                continue
            parts.append(with_decoded_blobs(raw.decode("latin-1"), depth - 1))
    return "\n".join(parts)


def scan_for_secrets(texts: dict[str, str], material: list[str]) -> list[str]:
    found = []
    for where, plain in texts.items():
        text = with_decoded_blobs(plain)
        if "PRIVATE KEY" in text:
            found.append(f"{where}: 'PRIVATE KEY'")
        found.extend(f"{where}: key line {i}" for i, line in enumerate(material) if line in text)
    return found


def test_secret_key_from_stack_config_never_leaks(
    conn_stack: TestStack, lab_api: Lab, h1: HostStatus, tmp_path: Path
) -> None:
    ns = h1.namespace
    before = host_snapshot(lab_api, ns)
    key_text = Path(h1.private_key).read_text()
    material = key_material(Path(h1.private_key))
    assert material and "PRIVATE KEY" in key_text
    conn_stack.config("kvmnet:sshPrivateKey", key_text, secret=True)
    logs: dict[str, str] = {}

    def run(name: str, proc: subprocess.CompletedProcess[str]) -> None:
        logs[name] = proc.stdout + proc.stderr

    run("preview", conn_stack.preview())
    run("up", conn_stack.up())
    link = links_of(lab_api, ns)["br-conn"]
    assert link["ifalias"] == "kvmnet:conn/dev/Bridge/br"
    assert conn_stack.outputs() == {"ifindex": link["ifindex"]}
    run("preview-no-changes", conn_stack.preview_no_changes())
    run("refresh", conn_stack.refresh())
    run("export", conn_stack.pulumi("stack", "export"))
    run("config", conn_stack.pulumi("config"))
    state = json.loads(logs["export"])
    resources = state["deployment"]["resources"]
    assert [r for r in resources if r["type"].endswith("kvmnet:Bridge")]
    assert "private_key_path" not in json.dumps(resources)

    # a broken key in the secret config: a clear error that does not echo it
    fake = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + "Zm9vYmFy" * 8
        + "\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    conn_stack.config("kvmnet:sshPrivateKey", fake, secret=True)
    conn_stack.set_program(configured_program(h1).replace("10.0.5.1/24", "10.0.5.2/24"))
    broken = conn_stack.up(check=False)
    logs["broken-up"] = broken.stdout + broken.stderr
    assert broken.returncode != 0
    assert "kvmnet:sshPrivateKey is not an unencrypted OpenSSH/PEM private key" in logs["broken-up"]
    assert "Zm9vYmFy" not in logs["broken-up"]

    # destroy uses the provider configuration recorded by the last update: put the key back
    conn_stack.config("kvmnet:sshPrivateKey", key_text, secret=True)
    conn_stack.set_program(configured_program(h1))
    run("up-again", conn_stack.up())
    run("destroy", conn_stack.destroy())
    after = host_snapshot(lab_api, ns)
    assert after == before, "\n".join(diff_snapshots(before, after))

    # every file the workspace wrote: state, history, backups, logs, Pulumi.<stack>.yaml
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            logs[str(path)] = path.read_bytes().decode(errors="replace")
    leaks = scan_for_secrets(logs, material)
    assert not leaks, leaks


# --- a non-root user with passwordless sudo --------------------------------------------------
@pytest.fixture
def own_lab(tmp_path: Path) -> Iterator[tuple[Lab, LabStatus]]:
    """A one-host lab whose authorized_keys a non-root user can read (the session lab keeps
    its files under pytest's 0700 temp dir, and sshd reads them as the user)."""
    # State under /run/kvmnet-lab/<name>, which everyone may traverse.
    with fresh_lab("ks", hosts=1) as (lab, status):
        os.chmod(lab.authorized_keys, 0o644)  # public keys only
        yield lab, status


@pytest.fixture
def sudo_user() -> Iterator[str]:
    assert shutil.which("sudo"), "sudo is not installed (`make deps` installs it)"
    user = "kvmtest" + secrets.token_hex(3)
    sudoers = Path("/etc/sudoers.d") / user
    try:
        # password "*": no password login, but not "locked" (sshd without PAM refuses "!")
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", "-p", "*", user], check=True)
        sudoers.write_text(f"{user} ALL=(root) NOPASSWD: ALL\n")
        os.chmod(sudoers, 0o440)
        subprocess.run(["visudo", "-c", "-q", "-f", str(sudoers)], check=True)
        yield user
    finally:
        sudoers.unlink(missing_ok=True)
        # -f: even if an SSH session of the user is still closing
        subprocess.run(["userdel", "-f", user], capture_output=True)


def test_non_root_sudo_user_works_as_well_as_root(
    own_lab: tuple[Lab, LabStatus], sudo_user: str, tmp_path: Path
) -> None:
    lab_api, status = own_lab
    h = status.hosts[0]
    ns = h.namespace
    before = host_snapshot(lab_api, ns)

    # without sudo: a one-line error naming the host and the Python it could not start
    # (this venv's Python lives under /root, which the user cannot even read)
    err = str(connect_error(settings(h, user=sudo_user)))
    assert err.startswith(f"{sudo_user}@{h.address}:22: the host agent ({VENV_PY})"), err
    assert "\n" not in err
    # a Python it can run, without root: the agent says it needs root, and how
    err = str(connect_error(settings(h, user=sudo_user, python="/usr/bin/python3")))
    assert "root privileges (connect as root or set sudo=true for a sudoer)" in err, err

    body = f"""
    import pulumi
    from kvmnet_provider.connection import HostSettings
    from kvmnet_provider.resources import *

    c = HostSettings(host={h.address!r}, user={sudo_user!r}, sudo=True,
                     known_hosts={h.known_hosts!r}, private_key_path={h.private_key!r},
                     python={VENV_PY!r}, firewall_backend="iptables")
    br = Bridge("br", BridgeArgs(connection=c, name="br-sudo", addresses=["10.0.6.1/24"]))
    t = TapPort("t", TapPortArgs(connection=c, name="vif9.0", bridge=br))
    fw = ForwardingSetting("fw", ForwardingSettingArgs(connection=c))
    m = MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source="10.0.6.0/24"))
    """

    def built() -> None:
        links = links_of(lab_api, ns)
        assert links["br-sudo"]["ifalias"] == "kvmnet:sudo/dev/Bridge/br"
        assert links["vif9.0"]["master"] == "br-sudo"
        assert run_in(lab_api, ns, ["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "1"
        assert "kvmnet:sudo/dev/MasqueradeRule/m" in nat_rules(lab_api, ns)

    stack = TestStack(tmp_path, textwrap.dedent(body), project="sudo")
    up_check_destroy(lab_api, ns, stack, built, before)


# --- a host with Debian's own packages --------------------------------------------------------
def test_debian_packaged_pyroute2_and_iptables_work_through_the_engine(
    lab: LabStatus, lab_api: Lab, tmp_path: Path
) -> None:
    """The host's Python is the system one with bookworm's python3-pyroute2 (0.7) and
    python3-iptables: up builds the same network, a second preview is empty, destroy (taps
    deleted as one batch) leaves the host as it was."""
    python = debian_python(tmp_path)
    h = lab.hosts[1]
    ns = h.namespace
    before = host_snapshot(lab_api, ns)
    body = f"""
    import pulumi
    from kvmnet_provider.connection import HostSettings
    from kvmnet_provider.resources import *

    c = HostSettings(host={h.address!r}, known_hosts={h.known_hosts!r},
                     private_key_path={h.private_key!r}, python={python!r},
                     firewall_backend="iptables")
    br = Bridge("br", BridgeArgs(connection=c, name="br-deb", addresses=["10.0.7.1/24"],
                                 mtu=1400))
    taps = [TapPort(f"t{{k}}", TapPortArgs(connection=c, name=f"vif7.{{k}}", bridge=br))
            for k in range(3)]
    fw = ForwardingSetting("fw", ForwardingSettingArgs(connection=c))
    m = MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source="10.0.7.0/24"))
    pulumi.export("mac", br.mac)
    """
    stack = TestStack(tmp_path / "stack", textwrap.dedent(body), project="deb")

    def built() -> None:
        links = links_of(lab_api, ns)
        assert links["br-deb"]["mtu"] == 1400
        assert stack.outputs()["mac"] == links["br-deb"]["address"]
        assert all(links[f"vif7.{k}"]["master"] == "br-deb" for k in range(3))
        addrs = json.loads(run_in(lab_api, ns, ["ip", "-j", "addr", "show", "dev", "br-deb"]))
        assert [a["local"] for a in addrs[0]["addr_info"] if a["family"] == "inet"] == ["10.0.7.1"]
        assert "kvmnet:deb/dev/MasqueradeRule/m" in nat_rules(lab_api, ns)

    up_check_destroy(lab_api, ns, stack, built, before)
