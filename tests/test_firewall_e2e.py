"""Networks on hosts whose firewall is not empty: FORWARD policy DROP (as Docker and ufw set
it), br_netfilter active (as on these machines), in the legacy tables or in nftables through
iptables-nft, with or without Docker's DOCKER-USER and DOCKER chains.

Real engine, lab hosts over SSH, real guests; results checked inside the host's namespace with
`iptables-legacy-save`, `iptables-nft-save` and `nft -j list ruleset`, and from inside the
guests and the outside host. Every iptables/nft command here runs in a lab namespace."""

from __future__ import annotations

import json
import shlex
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvmnet_lab.hostconfig import lab_stack_config
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.probe import EXPECTED
from kvmnet_lab.testing.console import GuestConsole
from kvmnet_lab.testing.debian_python import debian_python
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.snapshot import diff_snapshots, host_snapshot, run_in
from kvmnet_lab.testing.stack import TestStack, config_stack
from kvmnet_lab.toolchain import venv_python
from test_models_e2e import endpoints, observe_model, outside_connect

pytestmark = pytest.mark.e2e

LEGACY, NFT = "iptables-legacy", "iptables-nft"
BACKEND_OF = {LEGACY: "iptables", NFT: "nftables"}
DOCKER_RULE = [
    "-d", "172.17.0.2/32", "!", "-i", "docker0", "-o", "docker0",
    "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "ACCEPT",
]  # fmt: skip
FOREIGN_NAT = ["-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"]


# --- a host set up like one that runs Docker ----------------------------------------------------
def docker_like_host(lab_api: Lab, ns: str, tool: str, docker: bool) -> None:
    """FORWARD policy DROP in `tool`'s tables; with `docker`, Docker's chains as it makes them:
    FORWARD -> DOCKER-USER (-j RETURN), FORWARD -o docker0 -> DOCKER (one published port)."""

    def ipt(*args: str) -> None:
        run_in(lab_api, ns, [tool, *args])

    ipt("-P", "FORWARD", "DROP")
    if docker:
        ipt("-N", "DOCKER")
        ipt("-N", "DOCKER-USER")
        ipt("-A", "DOCKER-USER", "-j", "RETURN")
        ipt("-A", "FORWARD", "-j", "DOCKER-USER")
        ipt("-A", "FORWARD", "-o", "docker0", "-j", "DOCKER")
        ipt("-A", "DOCKER", *DOCKER_RULE)
    ipt("-t", "nat", "-A", "POSTROUTING", *FOREIGN_NAT)


def undo_host(lab_api: Lab, ns: str, tool: str) -> None:
    for args in (["-F"], ["-X"], ["-P", "FORWARD", "ACCEPT"], ["-t", "nat", "-F"]):
        run_in(lab_api, ns, [tool, *args], check=False)
    if tool == NFT:
        for table in ("filter", "nat"):
            run_in(lab_api, ns, ["nft", "delete", "table", "ip", table], check=False)


@pytest.fixture()
def host_firewall(lab: LabStatus, lab_api: Lab) -> Iterator[Any]:
    """Call with (tool, docker); the host's firewall is put back afterwards."""
    ns = lab.hosts[0].namespace
    made: list[str] = []

    def setup(tool: str, docker: bool) -> None:
        made.append(tool)
        docker_like_host(lab_api, ns, tool, docker)

    try:
        yield setup
    finally:
        for tool in made:
            undo_host(lab_api, ns, tool)


# --- what the host's own tools show -------------------------------------------------------------
def legacy_filter(lab_api: Lab, ns: str) -> list[str]:
    out = run_in(lab_api, ns, ["iptables-legacy-save", "-t", "filter"])
    return [line for line in out.splitlines() if line.startswith("-A")]


def nft_filter(lab_api: Lab, ns: str) -> list[str]:
    out = run_in(lab_api, ns, ["iptables-nft-save", "-t", "filter"])
    return [line for line in out.splitlines() if line.startswith(("-A", "#"))]


def nft_ruleset(lab_api: Lab, ns: str) -> list[dict[str, Any]]:
    """`nft -j list ruleset`, minus handles and counters (volatile)."""
    doc = json.loads(run_in(lab_api, ns, ["nft", "-j", "list", "ruleset"]))

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k != "handle" and k != "counter"}
        if isinstance(value, list):
            return [clean(v) for v in value if not (isinstance(v, dict) and "counter" in v)]
        return value

    return [clean(item) for item in doc["nftables"] if "metainfo" not in item]


def nft_chain(lab_api: Lab, ns: str, family: str, table: str, chain: str) -> list[str]:
    """The rules of one chain as `nft` prints them."""
    out = run_in(lab_api, ns, ["nft", "list", "chain", family, table, chain], check=False)
    lines = [line.strip() for line in out.splitlines() if line.startswith("\t\t")]
    return [line for line in lines if not line.startswith("type ")]  # a base chain's header


def snapshot(lab_api: Lab, ns: str) -> dict[str, Any]:
    return {**host_snapshot(lab_api, ns), "nftables": nft_ruleset(lab_api, ns)}


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after == before, "host changed:\n" + "\n".join(diff_snapshots(before, after))


def assert_updates(preview: str, kind: str) -> None:
    """`preview --diff` shows a resource of type `kind` to update (the header "Previewing
    update" says nothing)."""
    lines = [line for line in preview.splitlines() if f"kvmnet:{kind}: (update)" in line]
    assert lines, preview


def first_rule(lab_api: Lab, ns: str, tool: str, chain: str) -> str:
    lines = legacy_filter(lab_api, ns) if tool == LEGACY else nft_filter(lab_api, ns)
    return next(line for line in lines if line.startswith(f"-A {chain} "))


def state_backend(stack: TestStack) -> str:
    rules = stack.resources("ForwardRules")
    assert len(rules) == 1
    return str(rules[0]["outputs"]["backend"])


def ext_route(lab: LabStatus, add: bool) -> None:
    """The outside host learns (or forgets) a route to the guests' subnet via the KVM host."""
    verb = "replace" if add else "del"
    argv = ["ip", "netns", "exec", lab.ext.namespace, "ip", "route", verb, "10.0.1.0/24",
            "via", lab.hosts[0].address]  # fmt: skip
    subprocess.run(argv, check=add, capture_output=True)


def ext_ping(lab: LabStatus, address: str) -> bool:
    argv = ["ip", "netns", "exec", lab.ext.namespace, "ping", "-c", "2", "-W", "2", address]
    return subprocess.run(argv, capture_output=True).returncode == 0


def listen_8080(console: GuestConsole) -> None:
    listen(console, 8080)


def listen(console: GuestConsole, port: int) -> None:
    """The guest answers every TCP connection on `port` with its hostname."""
    console.run(f"nc -ll -p {port} -e /bin/hostname >/dev/null 2>&1 &")
    wait = f"for i in $(seq 50); do netstat -ltn | grep -q :{port} && break; sleep 0.2; done"
    assert console.run(wait + f"; netstat -ltn | grep -q :{port}").status == 0


@pytest.fixture()
def model_stack(tmp_path: Path, lab: LabStatus) -> Iterator[TestStack]:
    config = lab_stack_config(lab, image_dir=guest_image_dir())
    with config_stack(tmp_path, "fw", {**config, "kvmnet:accelerator": "tcg"}) as stack:
        yield stack


# --- each model on a DROP-policy host, in both backends -------------------------------------------
def forget_flows(lab_api: Lab, ns: str) -> None:
    """Empty the host's conntrack table. The cases share one lab host, and the guests' busybox
    ping reuses its ICMP id from boot to boot: a routed case's unanswered ping to the outside
    host stays tracked for 30 s, unNATed, and a NAT case right after it would match that entry
    and leave the host without masquerade (what a host keeps from flows before its MASQUERADE
    rule; see docs/limitations.md)."""
    code = "from pyroute2 import Conntrack\nwith Conntrack() as ct:\n    ct.flush()"
    run_in(lab_api, ns, [str(venv_python()), "-c", code])


CASES = [  # (model, the host's iptables, Docker's chains): each model once per backend
    ("isolated", LEGACY, False),
    ("routed", LEGACY, True),
    ("nat", LEGACY, True),
    ("isolated", NFT, True),
    ("routed", NFT, False),
    ("nat", NFT, True),
]


@pytest.mark.parametrize("model, tool, docker", CASES)
def test_model_on_a_drop_policy_host(
    model: str,
    tool: str,
    docker: bool,
    model_stack: TestStack,
    host_firewall: Any,
    lab: LabStatus,
    lab_api: Lab,
) -> None:
    host = lab.hosts[0]
    ns = host.namespace
    host_firewall(tool, docker)
    forget_flows(lab_api, ns)
    before = snapshot(lab_api, ns)
    docker_chain = [line for line in nft_filter(lab_api, ns) if line.startswith("-A DOCKER ")]
    model_stack.config("kvmnet:model", model)
    if model == "isolated":  # verified on request (routed and NAT are by default)
        model_stack.pulumi("config", "set", "--path", "kvmnet:verify", "true")
    if model == "nat":
        for key, value in (("guest", "g1"), ("guest_port", "8080"), ("host_port", "8080")):
            model_stack.pulumi("config", "set", "--path", f"kvmnet:portForwards[0].{key}", value)
    model_stack.up()

    # auto chose the backend that holds the host's DROP, and the state records it
    assert state_backend(model_stack) == BACKEND_OF[tool]
    jump_at = "DOCKER-USER" if docker else "FORWARD"
    assert first_rule(lab_api, ns, tool, jump_at) == (
        f"-A {jump_at} -m comment --comment kvmnet -j KVMNET_FWD"
    )
    if tool == NFT:
        assert run_in(lab_api, ns, ["iptables-legacy-save"]).count("KVMNET") == 0
        ours = nft_chain(lab_api, ns, "ip", "kvmnet", "guest_cross")
        assert ours == ['iifname "br-in" oifname "br-in" accept comment "kvmnet:kvmnet/fw/'
                        'ForwardRules/net-forward-rules"']  # fmt: skip
        if docker:  # Docker's own chain untouched
            assert [x for x in nft_filter(lab_api, ns) if x.startswith("-A DOCKER ")] == (
                docker_chain
            )
        assert "incompatible" not in "".join(nft_filter(lab_api, ns))
    else:
        assert "KVMNET" not in run_in(lab_api, ns, ["nft", "list", "ruleset"])
        if docker:
            docker_rules = [x for x in legacy_filter(lab_api, ns) if x.startswith("-A DOCKER ")]
            assert docker_rules == ["-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp "
                                    "-m tcp --dport 80 -j ACCEPT"]  # fmt: skip

    # The network proved its own row at `up`, the outside included.
    (check,) = model_stack.resources("NetworkCheck")
    checks = check["outputs"]["checks"]
    assert "outside" in check["outputs"]["passed"], checks
    assert all(c.get("ok") for c in checks), checks

    # The whole row, from inside the guests, on a host whose FORWARD policy is DROP.
    bridge_ip = None if model == "isolated" else "10.0.1.254"
    assert observe_model(model_stack, lab, bridge_ip) == EXPECTED[model]

    # A neighbour with a route to the guests' subnet via the host.
    if model in ("routed", "nat"):
        g1 = endpoints(model_stack)[0]
        ext_route(lab, add=True)
        try:
            with GuestConsole(g1.console) as console:
                listen_8080(console)
            if model == "routed":
                assert ext_ping(lab, g1.address)  # reached: that is a routed network
                assert outside_connect(lab, g1.address, 8080) == "g1"
            else:
                assert not ext_ping(lab, g1.address)  # refused ...
                assert outside_connect(lab, g1.address, 8080) == ""
                assert outside_connect(lab, host.address, 8080) == "g1"  # ... but the forward
        finally:
            ext_route(lab, add=False)
    model_stack.preview_no_changes()

    if model == "nat":
        drift_and_blocker(model_stack, lab_api, ns, tool, jump_at)

    model_stack.destroy()
    assert_same(before, snapshot(lab_api, ns))


def drift_and_blocker(stack: TestStack, lab_api: Lab, ns: str, tool: str, jump_at: str) -> None:
    """A reload loses our jump: refresh shows it, up puts it back. A foreign DROP before our
    jump: up fails in one line naming the chain and the rule; gone, up succeeds."""
    jump = ["-m", "comment", "--comment", "kvmnet", "-j", "KVMNET_FWD"]
    run_in(lab_api, ns, [tool, "-D", jump_at, *jump])
    refresh = stack.refresh()
    assert "net-forward-rules" in refresh.stdout, refresh.stdout
    preview = stack.preview()
    assert_updates(preview.stdout, "ForwardRules")
    stack.up()
    assert first_rule(lab_api, ns, tool, jump_at) == f"-A {jump_at} " + " ".join(jump)
    stack.preview_no_changes()

    drop = ["-i", "br-in", "-j", "DROP"]
    run_in(lab_api, ns, [tool, "-I", "FORWARD", "1", *drop])
    try:
        stack.refresh()
        failed = stack.up(check=False)
        text = failed.stdout + failed.stderr
        assert failed.returncode != 0
        lines = [line for line in text.splitlines() if "-i br-in -j DROP" in line]
        assert lines and "FORWARD" in lines[0] and "kvmnet's jump" in lines[0], text
    finally:
        run_in(lab_api, ns, [tool, "-D", "FORWARD", *drop])
    stack.up()
    stack.preview_no_changes()


# --- two stacks on one host, no guests ---------------------------------------------------------
def rules_program(lab: LabStatus, python: str, bridge: str, subnet: str, extra: str = "") -> str:
    h = lab.hosts[0] if python == venv_python() else lab.hosts[1]
    return textwrap.dedent(
        f"""
        from kvmnet_provider.connection import HostSettings
        from kvmnet_provider.resources import *
        from kvmnet_provider.resources.forward_rules import ForwardRules, ForwardRulesArgs

        c = HostSettings(host={h.address!r}, known_hosts={h.known_hosts!r},
                         private_key_path={h.private_key!r}, python={python!r})
        ForwardRules("fr", ForwardRulesArgs(connection=c, mode="nat", bridge={bridge!r},
                     subnet={subnet!r}, forwards=[{{"guest": "{subnet[:-4]}11", "port": 80}}]))
        MasqueradeRule("m", MasqueradeRuleArgs(connection=c, source={subnet!r}))
        """
    ) + textwrap.dedent(extra)


@pytest.mark.parametrize("tool", [LEGACY, NFT])
def test_two_stacks_keep_each_others_rules_and_destroy_removes_exactly_ours(
    tool: str, tmp_path: Path, host_firewall: Any, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    host_firewall(tool, True)
    before = snapshot(lab_api, ns)
    py = venv_python()
    a = TestStack(tmp_path, rules_program(lab, py, "br-a", "10.0.1.0/24"), project="alpha")
    b = TestStack(tmp_path, rules_program(lab, py, "br-b", "10.0.2.0/24"), project="beta")
    try:
        a.up()
        b.up()
        view = (legacy_filter if tool == LEGACY else nft_filter)(lab_api, ns)
        text = "\n".join(view)
        assert text.count("-j KVMNET_FWD") == 1  # one jump, shared
        for stack_name in ("alpha", "beta"):
            owner = f"kvmnet:{stack_name}/dev/ForwardRules/fr"
            where = text if tool == LEGACY else json.dumps(nft_ruleset(lab_api, ns))
            assert owner in where
        a.destroy()
        after_a = json.dumps(nft_ruleset(lab_api, ns)) + "\n".join(legacy_filter(lab_api, ns))
        assert "alpha/dev" not in after_a and "beta/dev/ForwardRules/fr" in after_a
        assert "beta/dev/MasqueradeRule/m" in after_a + run_in(
            lab_api, ns, ["iptables-legacy-save", "-t", "nat"]
        )
        b.preview_no_changes()
        b.destroy()
        assert_same(before, snapshot(lab_api, ns))
    finally:
        a.remove()
        b.remove()


# --- Debian's packaged python3-nftables on the host -------------------------------------------
def test_debian_packaged_python3_nftables_works(
    tmp_path: Path, lab: LabStatus, lab_api: Lab
) -> None:
    """The host's Python is the system one with bookworm's python3-nftables (and pyroute2,
    python-iptables): the nftables backend makes, reads and removes the rules."""
    python = debian_python(tmp_path)
    ns = lab.hosts[1].namespace
    docker_like_host(lab_api, ns, NFT, docker=True)
    try:
        before = snapshot(lab_api, ns)
        extra = """
        PortForward("pf", PortForwardArgs(connection=c, host_port=8080,
                    guest_address="10.0.7.11", guest_port=80))
        """
        stack = TestStack(
            tmp_path / "s", rules_program(lab, python, "br-deb", "10.0.7.0/24", extra), "deb"
        )
        try:
            stack.up()
            assert {r["outputs"]["backend"] for r in stack.resources("kvmnet:ForwardRules")} == {
                "nftables"
            }
            assert nft_chain(lab_api, ns, "ip", "kvmnet", "prerouting") == [
                "fib daddr type local tcp dport 8080 dnat to 10.0.7.11:80 "
                'comment "kvmnet:deb/dev/PortForward/pf"'
            ]
            assert first_rule(lab_api, ns, NFT, "DOCKER-USER").endswith("-j KVMNET_FWD")
            stack.preview_no_changes()
            stack.destroy()
            assert_same(before, snapshot(lab_api, ns))
        finally:
            stack.remove()
    finally:
        undo_host(lab_api, ns, NFT)


@pytest.mark.parametrize("tool", [LEGACY, NFT])
def test_docker_started_after_kvmnet_the_jump_moves_to_docker_user(
    tool: str, tmp_path: Path, host_firewall: Any, lab: LabStatus, lab_api: Lab
) -> None:
    ns = lab.hosts[0].namespace
    host_firewall(tool, False)
    before = snapshot(lab_api, ns)
    stack = TestStack(tmp_path, rules_program(lab, venv_python(), "br-a", "10.0.1.0/24"), "late")
    try:
        stack.up()
        jump = "-m comment --comment kvmnet -j KVMNET_FWD"
        assert first_rule(lab_api, ns, tool, "FORWARD") == f"-A FORWARD {jump}"
        # Docker starts: its DOCKER-USER chain, jumped to from FORWARD (after ours)
        for args in (["-N", "DOCKER-USER"], ["-A", "DOCKER-USER", "-j", "RETURN"],
                     ["-A", "FORWARD", "-j", "DOCKER-USER"]):  # fmt: skip
            run_in(lab_api, ns, [tool, *args])
        stack.refresh()
        preview = stack.preview()
        assert_updates(preview.stdout, "ForwardRules")
        stack.up()
        assert first_rule(lab_api, ns, tool, "DOCKER-USER") == f"-A DOCKER-USER {jump}"
        assert first_rule(lab_api, ns, tool, "FORWARD") == "-A FORWARD -j DOCKER-USER"
        stack.preview_no_changes()
        stack.destroy()
        for args in (["-D", "FORWARD", "-j", "DOCKER-USER"], ["-F", "DOCKER-USER"],
                     ["-X", "DOCKER-USER"]):  # fmt: skip
            run_in(lab_api, ns, [tool, *args])
        assert_same(before, snapshot(lab_api, ns))
    finally:
        stack.remove()


# --- a port forward catches only what is addressed to the host ---------------------------------
def dnat_rules(lab_api: Lab, ns: str, tool: str) -> list[str]:
    """The host's DNAT rules: iptables-legacy-save lines, or nft's lines of kvmnet's chain."""
    if tool == LEGACY:
        out = run_in(lab_api, ns, ["iptables-legacy-save", "-t", "nat"])
        return [line for line in out.splitlines() if line.startswith("-A") and "DNAT" in line]
    return [x for x in nft_chain(lab_api, ns, "ip", "kvmnet", "prerouting") if "dnat" in x]


def make_rule_previous_shape(lab_api: Lab, ns: str, tool: str) -> None:
    """Put back the rule in its older shape (same owner mark, no match on the destination's
    type), as a host may still hold it."""
    if tool == LEGACY:
        (line,) = dnat_rules(lab_api, ns, tool)
        args = shlex.split(line)[1:]  # after "-A"
        run_in(lab_api, ns, ["iptables-legacy", "-t", "nat", "-D", *args])
        at = args.index("addrtype")
        old = args[: at - 1] + args[at + 3 :]  # without "-m addrtype --dst-type LOCAL"
        run_in(lab_api, ns, ["iptables-legacy", "-t", "nat", "-A", *old])
        return
    doc = json.loads(run_in(lab_api, ns, ["nft", "-j", "list", "chain", "ip", "kvmnet",
                                          "prerouting"]))  # fmt: skip
    (rule,) = [i["rule"] for i in doc["nftables"] if "rule" in i]
    (text,) = dnat_rules(lab_api, ns, tool)
    old = text.replace("fib daddr type local ", "")
    run_in(lab_api, ns, ["nft", "delete", "rule", "ip", "kvmnet", "prerouting", "handle",
                         str(rule["handle"])])  # fmt: skip
    run_in(lab_api, ns, ["nft", "add", "rule", "ip", "kvmnet", "prerouting", *shlex.split(old,
                         posix=False)])  # fmt: skip


def make_state_previous_shape(stack: TestStack, tmp_path: Path) -> None:
    """State of the older shape: the rule read back without `dst_type`."""
    path = tmp_path / "state.json"
    stack.pulumi("stack", "export", "--file", str(path))
    doc = json.loads(path.read_text())
    (pf,) = [r for r in doc["deployment"]["resources"] if r["type"].endswith("PortForward")]
    for rule in pf["outputs"]["rules"]:
        del rule["dst_type"]
    path.write_text(json.dumps(doc))
    stack.pulumi("stack", "import", "--file", str(path))


def guest_connects(console: GuestConsole, address: str, port: int) -> str:
    return console.run(f"echo hi | nc -w 5 {address} {port}", 30).output.strip()


@pytest.mark.parametrize("tool", [LEGACY, NFT])
def test_a_port_forward_takes_only_traffic_to_the_host_and_old_rules_converge(
    tool: str,
    model_stack: TestStack,
    host_firewall: Any,
    lab: LabStatus,
    lab_api: Lab,
    tmp_path: Path,
) -> None:
    """The forward's port P is the outside host's echo port: a guest's connection to the
    outside host on P must reach it (the echo names the masqueraded source, the host), while
    the outside host's connection to the KVM host's address on P still reaches g1. The
    older shape of the rule (protocol and port only) caught the guest's connection too; a
    host and a state of that shape converge at the next `up`, without a refresh."""
    host, port = lab.hosts[0], lab.ext.echo_port
    ns = host.namespace
    host_firewall(tool, False)
    forget_flows(lab_api, ns)
    before = snapshot(lab_api, ns)
    model_stack.config("kvmnet:model", "nat")
    for key, value in (("guest", "g1"), ("guest_port", str(port)), ("host_port", str(port))):
        model_stack.pulumi("config", "set", "--path", f"kvmnet:portForwards[0].{key}", value)
    model_stack.up()
    (pf,) = model_stack.resources("PortForward")
    assert pf["outputs"]["backend"] == BACKEND_OF[tool]
    assert [r["dst_type"] for r in pf["outputs"]["rules"]] == ["local"]
    g1, g2 = endpoints(model_stack)
    owner = "kvmnet:" + pf["outputs"]["owner"]  # the rule's comment
    local_rule = (
        f"-A PREROUTING -p tcp -m addrtype --dst-type LOCAL -m tcp --dport {port} -m comment "
        f'--comment "{owner}" -j DNAT --to-destination {g1.address}:{port}'
        if tool == LEGACY
        else f'fib daddr type local tcp dport {port} dnat to {g1.address}:{port} comment "{owner}"'
    )
    assert dnat_rules(lab_api, ns, tool) == [local_rule]

    with GuestConsole(g1.console) as console:
        console.wait_ready(120)
        listen(console, port)
    with GuestConsole(g2.console) as guest:
        guest.wait_ready(120)

        def forwards_only_to_the_host() -> None:
            assert outside_connect(lab, host.address, port) == "g1"  # the way in
            seen = guest_connects(guest, lab.ext.address, port)  # the way out, untouched
            assert seen.startswith(f"peer {host.address} "), seen

        forwards_only_to_the_host()
        model_stack.preview_no_changes()

        # A host and a state of the older shape: its rule catches the guest's traffic.
        make_rule_previous_shape(lab_api, ns, tool)
        make_state_previous_shape(model_stack, tmp_path)
        assert dnat_rules(lab_api, ns, tool) == [
            local_rule.replace(
                " -m addrtype --dst-type LOCAL" if tool == LEGACY else "fib daddr type local ", ""
            )
        ]
        assert not guest_connects(guest, lab.ext.address, port).startswith("peer ")
        preview = model_stack.preview()
        assert_updates(preview.stdout, "PortForward")
        up = model_stack.up()  # no refresh: the state says the rule is of the old shape
        assert "1 updated" in up.stdout, up.stdout
        assert dnat_rules(lab_api, ns, tool) == [local_rule]  # replaced: one rule, new shape
        forwards_only_to_the_host()
        model_stack.preview_no_changes()

        # A hand-made rule of the old shape on a host whose state is current: refresh sees it.
        make_rule_previous_shape(lab_api, ns, tool)
        refresh = model_stack.refresh()
        assert pf["urn"].split("::")[-1] in refresh.stdout, refresh.stdout
        preview = model_stack.preview()
        assert_updates(preview.stdout, "PortForward")
        model_stack.up()
        assert dnat_rules(lab_api, ns, tool) == [local_rule]
        model_stack.preview_no_changes()

    model_stack.destroy()
    assert dnat_rules(lab_api, ns, tool) == []
    assert_same(before, snapshot(lab_api, ns))
