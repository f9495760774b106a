"""DHCP/DNS without a host: the spec's rules, dnsmasq's files, the INPUT
rules, the model's checks at declaration and the DhcpServer provider's check."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kvmnet_provider.agent.dhcp import config
from kvmnet_provider.agent.firewall import plan
from kvmnet_provider.errors import ConfigError
from kvmnet_provider.models import GuestSpec, addresses, collisions
from kvmnet_provider.models.networks import NetworkArgs, dhcp_enabled
from kvmnet_provider.resources.dhcp import DhcpServerProvider
from kvmnet_provider.spec import dhcp, verify_probe
from kvmnet_provider.spec.models import uses_dhcp
from kvmnet_provider.spec.validate import InvalidInput

OWNER = "kvmnet:p/s/DhcpServer/net-dhcp"
G1 = {"name": "g1", "mac": "52:54:00:00:01:01", "address": "10.0.1.11"}
G2 = {"name": "g2", "mac": "52:54:00:00:01:02", "address": None}


def spec(**kw: Any) -> dict[str, Any]:
    args = {"owner": OWNER, "bridge": "br-in", "subnet": "10.0.1.0/24", "gateway": "10.0.1.254",
            "hosts": [G1, G2], **kw}  # fmt: skip
    return dhcp.normalise_spec(args)


# --- the spec ----------------------------------------------------------------------------------
def test_default_range_is_the_upper_half_minus_the_gateway() -> None:
    assert dhcp.default_range("10.0.1.0/24", "10.0.1.254") == ["10.0.1.128", "10.0.1.253"]
    assert dhcp.default_range("10.0.1.0/24", "10.0.1.1") == ["10.0.1.128", "10.0.1.254"]
    assert dhcp.default_range("192.168.0.0/16", None) == ["192.168.128.0", "192.168.255.254"]
    assert spec()["dhcp_range"] == ["10.0.1.128", "10.0.1.253"]


@pytest.mark.parametrize(
    "value, ok",
    [("kvm.internal", "kvm.internal"), ("Lab.Test", "lab.test"), ("lan", "lan")],
)
def test_domain_accepts_dns_names(value: str, ok: str) -> None:
    assert dhcp.domain(value) == ok


@pytest.mark.parametrize(
    "value", ["", "bad_domain", "-a.b", "a-.b", "a..b", "a.b.", "x" * 64, "a\nlocal=/x/", 5]
)
def test_domain_refuses_what_is_not_a_dns_name(value: Any) -> None:
    with pytest.raises(InvalidInput):
        dhcp.domain(value)


@pytest.mark.parametrize(
    "hosts, prop, fragment",
    [
        ([G1, {**G2, "mac": G1["mac"]}], "hosts[1] (g2).mac", "already g1's"),
        ([{**G1, "address": "10.0.1.200"}], "hosts[0] (g1).address", "inside the DHCP range"),
        ([{**G1, "address": "10.0.2.5"}], "hosts[0] (g1).address", "not inside subnet"),
        ([{**G1, "address": "10.0.1.254"}], "hosts[0] (g1).address", "gateway"),
        ([{**G1, "address": "10.0.1.0"}], "hosts[0] (g1).address", "network address"),
        ([{**G1, "address": "10.0.1.255"}], "hosts[0] (g1).address", "broadcast"),
        ([G1, {**G2, "address": "10.0.1.11"}], "hosts[1] (g2).address", "already g1's"),
    ],
)
def test_cross_check_names_the_host_and_property(
    hosts: list[dict[str, Any]], prop: str, fragment: str
) -> None:
    props = {"subnet": "10.0.1.0/24", "gateway": "10.0.1.254", "hosts": dhcp.hosts(hosts)}
    failures = dhcp.cross_check(props)
    assert failures and failures[0][0] == prop and fragment in failures[0][1], failures


def test_range_must_lie_in_the_subnet_without_the_gateway() -> None:
    for rng, fragment in (
        (["10.0.1.100", "10.0.2.10"], "not inside subnet"),
        (["10.0.1.200", "10.0.1.254"], "gateway"),
        (["10.0.1.0", "10.0.1.20"], "network or broadcast"),
    ):
        props = {"subnet": "10.0.1.0/24", "gateway": "10.0.1.254", "dhcp_range": rng}
        failures = dhcp.cross_check(props)
        assert failures[0][0] == "dhcp_range" and fragment in failures[0][1], failures
    with pytest.raises(InvalidInput, match="after end"):
        dhcp.dhcp_range(["10.0.1.200", "10.0.1.100"])


def test_values_that_could_inject_into_dnsmasq_files_are_refused() -> None:
    bad_values = [
        {"name": "g1\ndhcp-range=1"},
        {"name": "g1\n"},
        {"name": "g1,x"},
        {"address": "10.0.1.11,x"},
        {"mac": "52:54:00:00:01:01\n"},
    ]
    for bad in bad_values:
        with pytest.raises(InvalidInput):
            dhcp.host({**G1, **bad})
    with pytest.raises(InvalidInput):
        dhcp.domain("lab.test\n")


# --- dnsmasq's files ---------------------------------------------------------------------------
def test_conf_binds_the_bridge_only_and_keeps_its_files_in_the_run_dir(tmp_path: Path) -> None:
    files = tmp_path / "readable"
    text = config.conf_text(spec(domain="lab.test"), tmp_path, files, "dnsmasq", "nogroup")
    lines = text.splitlines()
    for line in (
        "interface=br-in",
        "except-interface=lo",
        "bind-interfaces",
        "no-hosts",
        "domain=lab.test",
        "local=/lab.test/",
        "dhcp-range=10.0.1.128,10.0.1.253,255.255.255.0,3600",
        f"dhcp-leasefile={tmp_path}/leases",
        f"pid-file={tmp_path}/dnsmasq.pid",
        "dhcp-option=option:router,10.0.1.254",
    ):
        assert line in lines, text
    assert not any(line.startswith(("listen-address", "port=0", "resolv-file")) for line in lines)
    assert config.argv("/usr/sbin/dnsmasq", tmp_path) == [
        "/usr/sbin/dnsmasq",
        f"--conf-file={tmp_path}/dnsmasq.conf",
    ]


def test_dnsmasq_drops_root_and_reads_its_hosts_files_where_it_may(tmp_path: Path) -> None:
    """It parses packets from guests: never root after start; the files it re-reads on SIGHUP
    as that user are outside root's private run dir, the lease file inside it."""
    files = tmp_path / "readable"
    lines = config.conf_text(spec(), tmp_path, files, "dnsmasq", "nogroup").splitlines()
    assert "user=dnsmasq" in lines and "group=nogroup" in lines
    assert not any(line in ("user=root", "group=root") for line in lines)
    assert f"addn-hosts={files}/hosts" in lines
    assert f"dhcp-hostsfile={files}/dhcp-hosts" in lines
    assert f"dhcp-leasefile={tmp_path}/leases" in lines


def test_dnsmasq_runs_as_the_dnsmasq_user_else_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    import grp
    import pwd

    from kvmnet_provider.agent.dhcp import account
    from kvmnet_provider.agent.errors import AgentError

    def users(*names: str) -> Any:
        def getpwnam(name: str) -> Any:
            if name not in names:
                raise KeyError(name)
            return SimpleNamespace(pw_name=name, pw_uid=100 + len(name), pw_gid=65534)

        return getpwnam

    monkeypatch.setattr(grp, "getgrgid", lambda gid: SimpleNamespace(gr_name="nogroup"))
    monkeypatch.setattr(pwd, "getpwnam", users("dnsmasq", "nobody"))
    assert account.account() == ("dnsmasq", "nogroup", 65534)
    monkeypatch.setattr(pwd, "getpwnam", users("nobody"))
    assert account.account() == ("nobody", "nogroup", 65534)
    monkeypatch.setattr(pwd, "getpwnam", users())
    with pytest.raises(AgentError) as caught:
        account.account()
    assert "\n" not in caught.value.message
    assert "useradd --system --no-create-home --shell /usr/sbin/nologin dnsmasq" in (
        caught.value.message
    )


def test_dnsmasq_files_are_roots_and_readable_by_its_group_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os
    import stat

    from kvmnet_provider.agent import hoststate
    from kvmnet_provider.agent.dhcp import account

    monkeypatch.setattr(hoststate, "ROOT", tmp_path / "run")
    gid = 65534
    files = account.prepare("br-in", gid)
    assert files == account.files_dir("br-in")
    assert files.parent.parent == tmp_path / "run-dnsmasq"
    account.write(files / "hosts", "10.0.1.254 gateway.lab\n", gid)
    modes = {p: os.lstat(p) for p in (files.parent.parent, files.parent, files, files / "hosts")}
    assert [stat.S_IMODE(m.st_mode) for m in modes.values()] == [0o711, 0o711, 0o710, 0o640]
    assert all(m.st_uid == os.geteuid() for m in modes.values())
    assert [m.st_gid for m in modes.values()][2:] == [gid, gid]
    assert (files / "hosts").read_text() == "10.0.1.254 gateway.lab\n"
    account.remove("br-in")
    assert not (tmp_path / "run-dnsmasq").exists()  # the host as before


def test_hosts_files() -> None:
    s = spec()
    probe = f"{verify_probe.probe_mac('br-in')},10.0.1.127"  # below the range, no name
    assert config.dhcp_hosts_text(s) == (
        f"52:54:00:00:01:01,10.0.1.11,g1\n52:54:00:00:01:02,g2\n{probe}\n"
    )
    full = {**s, "subnet": "10.0.1.0/30", "gateway": "10.0.1.1", "dhcp_range": ["10.0.1.2"] * 2}
    assert verify_probe.probe_mac("br-in") not in config.dhcp_hosts_text(full)  # no room
    assert config.hosts_text(s) == (
        "10.0.1.254 gateway.kvm.internal\n10.0.1.11 g1.kvm.internal g1\n"
    )


def test_lease_file_parsing() -> None:
    text = (
        "1764543600 52:54:00:00:09:09 10.0.1.140 stray 01:52:54:00:00:09:09\n"
        "1764543000 52:54:00:00:01:01 10.0.1.11 * *\n"
        "duid 00:01:00:01\n"
    )
    assert config.leases(text) == [
        {"expires": 1764543000, "mac": "52:54:00:00:01:01", "address": "10.0.1.11",
         "hostname": None},
        {"expires": 1764543600, "mac": "52:54:00:00:09:09", "address": "10.0.1.140",
         "hostname": "stray"},
    ]  # fmt: skip
    assert config.leases(None) == []


# --- the INPUT rules -----------------------------------------------------------------------------
def test_input_rules() -> None:
    rules = plan.InputRules.from_spec(
        {"bridge": "br-in", "address": "10.0.1.254", "subnet": "10.0.1.0/24"}
    )
    assert [r.text() for r in rules.rules()] == [
        "-i br-in -p udp --dport 67 -j ACCEPT",
        "-i br-in -s 10.0.1.0/24 -d 10.0.1.254/32 -p udp --dport 53 -j ACCEPT",
        "-i br-in -s 10.0.1.0/24 -d 10.0.1.254/32 -p tcp --dport 53 -j ACCEPT",
    ]
    with pytest.raises(InvalidInput):
        plan.InputRules.from_spec(
            {"bridge": "br-in", "address": "10.0.2.1", "subnet": "10.0.1.0/24"}
        )


# --- the model ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def fresh_claims() -> Iterator[None]:
    collisions.forget_all()
    yield
    collisions.forget_all()


@dataclass
class Net:
    subnet: str = "10.0.1.0/24"
    gateway: str | None = "10.0.1.254"
    domain: str = "kvm.internal"
    dhcp_range: Any = None
    guests: list[GuestSpec] = field(default_factory=list)


def guest(i: int, address: str | None, name: str | None = None) -> GuestSpec:
    return GuestSpec(name=name or f"g{i}", tap=f"vif{i}.0", mac=f"52:54:00:00:01:{i:02x}",
                     address=address)  # fmt: skip


def test_model_dhcp_default_and_refusal() -> None:
    args = NetworkArgs(connection=None)  # type: ignore[arg-type]
    assert dhcp_enabled("nat", args) and dhcp_enabled("routed", args)
    assert not dhcp_enabled("isolated", args) and not dhcp_enabled("bridged", args)
    args.dhcp = False
    assert not dhcp_enabled("nat", args)
    args.dhcp = True
    with pytest.raises(ConfigError) as caught:
        dhcp_enabled("isolated", args, "lan")
    assert str(caught.value) == (
        "lan: dhcp: an isolated network's bridge has no address to serve from; leave dhcp "
        "unset (or false), or make the network routed or nat"
    )
    with pytest.raises(ConfigError, match="^net: dhcp: a bridged network's bridge"):
        dhcp_enabled("bridged", args)
    assert uses_dhcp("nat", None) and not uses_dhcp("nat", False) and not uses_dhcp("bridged", None)


@pytest.mark.parametrize(
    "net, key, fragment",
    [
        (Net(guests=[guest(1, "10.0.1.130")]), "net: guests[0] (g1).address", "DHCP range"),
        (Net(guests=[guest(1, None, "g_1")]), "net: guests[0] (g_1).name", "DNS label"),
        (Net(domain="bad_domain"), "net: domain", "DNS domain"),
        (Net(dhcp_range=("10.0.1.10", "10.0.2.10")), "net: dhcp_range", "not inside"),
        (
            Net(dhcp_range=("10.0.1.10", "10.0.1.20"), guests=[guest(1, "10.0.1.15")]),
            "net: guests[0] (g1).address",
            "DHCP range",
        ),  # fmt: skip
    ],
)
def test_model_dhcp_checks_name_network_guest_and_property(
    net: Net, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        addresses.check_dhcp("net", net)
    assert str(caught.value).startswith(key + ": ") and fragment in str(caught.value)


def test_model_dhcp_checks_pass_and_return_the_range() -> None:
    net = Net(guests=[guest(1, "10.0.1.11"), guest(2, None)])
    assert addresses.check_dhcp("net", net) == ["10.0.1.128", "10.0.1.253"]


# --- the provider's check ------------------------------------------------------------------------
def test_provider_check_names_the_property() -> None:
    provider = DhcpServerProvider()
    news = {
        "connection": {"host": "198.18.0.2"},
        "owner": OWNER,
        "bridge": "br-in",
        "subnet": "10.0.1.0/24",
        "gateway": "10.0.1.254",
        "domain": "kvm.internal",
        "hosts": [G1, {**G2, "mac": G1["mac"]}],
    }
    result = provider.check({}, news)
    assert [f.property for f in result.failures] == ["hosts[1] (g2).mac"]
    result = provider.check({}, {**news, "hosts": [G1], "domain": "a_b"})
    assert [f.property for f in result.failures] == ["domain"]
    result = provider.check({}, {**news, "hosts": [G1]})
    assert result.failures == []
    assert result.inputs["serving"] is True and result.inputs["dhcp_range"] is None


def test_what_blocks_dhcp_or_dns() -> None:
    flows = plan.InputRules("br-in", "10.0.1.254", "10.0.1.0/24").flows()
    Rule = plan.Rule
    assert plan.could_block(Rule("drop"), flows)
    assert plan.could_block(Rule("drop", iif="br-in"), flows)
    assert plan.could_block(Rule("reject", iif="br-in", dst="10.0.1.254/32"), flows)
    assert not plan.could_block(Rule("drop", iif="eth0"), flows)
    assert not plan.could_block(Rule("drop", src="192.0.2.7/32"), flows)
    assert not plan.could_block(Rule("drop", proto="tcp", dport=22), flows)
    assert not plan.could_block(Rule("accept", iif="br-in"), flows)


def test_a_port_still_in_use_after_the_retries_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two networks with one gateway address on a host: dnsmasq cannot bind; the line says
    why that may be and what to do, not only dnsmasq's words."""
    from kvmnet_provider.agent.dhcp import operations
    from kvmnet_provider.agent.errors import AgentError

    said = "dnsmasq exited with 2: failed to create listening socket for 10.0.1.254: Address already in use"  # noqa: E501
    tries: list[int] = []
    clock = iter(range(0, 100))

    def refused(_run_dir: Path) -> int:
        tries.append(1)
        raise AgentError("failed", said)

    monkeypatch.setattr(operations, "_launch_once", refused)
    fake_time = SimpleNamespace(monotonic=lambda: float(next(clock)), sleep=lambda _s: None)
    monkeypatch.setattr(operations, "time", fake_time)  # this module's clock only
    with pytest.raises(AgentError) as caught:
        operations._launch(tmp_path)
    assert len(tries) > 1  # retried first: a dnsmasq of ours may just be stopping
    assert caught.value.message.startswith(said + "; something else on this host serves DNS")
    assert "give this network its own subnet and gateway" in caught.value.message


class _Agent:
    """Answers the provider's calls from a table; records them in order."""

    def __init__(self, failing: str) -> None:
        self.calls: list[str] = []
        self.failing = failing

    def call(self, op: str, _args: dict[str, Any], timeout: float | None = None) -> Any:
        self.calls.append(op)
        if op == self.failing:
            from kvmnet_provider.connection.session import AgentCallError

            raise AgentCallError("root@h1:22", "failed", "dnsmasq exited with 2: Address in use")
        return {"rules": [], "backend": "nftables", "pid": 1, "running": True, "leases": []}


def test_a_failed_create_leaves_no_rules_or_run_dir_but_a_failed_update_keeps_them() -> None:
    """Pulumi records nothing of a failed create, so no destroy would ever undo it."""
    from kvmnet_provider.connection.session import AgentCallError

    provider = DhcpServerProvider()
    props = provider.check({}, {"connection": {"host": "198.18.0.2"}, "owner": OWNER,
                                "bridge": "br-in", "subnet": "10.0.1.0/24",
                                "gateway": "10.0.1.254", "hosts": [G1]}).inputs  # fmt: skip
    agent = _Agent("dhcp.start")
    with pytest.raises(AgentCallError, match="dnsmasq exited"):
        provider.host_create(agent, props)  # type: ignore[arg-type]
    assert agent.calls == ["input.ensure", "dhcp.start", "dhcp.stop", "input.remove"]
    agent = _Agent("dhcp.start")
    with pytest.raises(AgentCallError):
        provider.host_update(agent, props, props)  # type: ignore[arg-type]
    assert agent.calls == ["input.ensure", "dhcp.start"]
