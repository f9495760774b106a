"""The user a guest's QEMU runs as: its own by default, named from its owner mark (pure parts;
tests/test_guest_host_trust_e2e.py makes and removes real ones)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.agent.guests import users
from kvmnet_provider.spec.validate import user_name as valid_user_name

OWNER = "kvmnet/dev/QemuGuest/g1"


def test_a_guests_user_is_short_deterministic_and_its_own() -> None:
    name = users.user_name(OWNER, "host")
    assert name == users.user_name(OWNER, "host")  # the same at every start
    assert name.startswith("kvmnet-") and len(name) == len("kvmnet-") + 8
    assert valid_user_name(name) == name  # a POSIX name useradd takes
    int(name.removeprefix("kvmnet-"), 16)
    others = {
        users.user_name("kvmnet/dev/QemuGuest/g2", "host"),  # another guest
        users.user_name("kvmnet/prod/QemuGuest/g1", "host"),  # another stack
        users.user_name(OWNER, "netns-4026532000"),  # the same stack on a lab host
    }
    assert name not in others and len(others) == 3


def entry(name: str, gecos: str, uid: int = 990) -> Any:
    return SimpleNamespace(pw_name=name, pw_gecos=gecos, pw_uid=uid, pw_gid=uid)


def test_only_a_user_marked_as_this_guests_is_ours() -> None:
    name = users.user_name(OWNER, "host")
    mine = users.comment("g1", OWNER, "host")
    assert mine.startswith("kvmnet guest g1 host ")
    assert users._is_ours(entry(name, mine), OWNER, "host")
    assert users._is_ours(entry(name, users.comment("renamed", OWNER, "host")), OWNER, "host")
    assert not users._is_ours(entry(name, mine), "kvmnet/dev/QemuGuest/g2", "host")
    assert not users._is_ours(entry(name, mine), OWNER, "netns-1")
    assert not users._is_ours(entry(name, "Alice,,,"), OWNER, "host")
    assert not users._is_ours(entry(name, ""), OWNER, "host")


@pytest.mark.parametrize(
    ("asked", "euid", "runs"),
    [
        (None, 0, users.user_name(OWNER, "host")),  # the default: the guest's own user
        ("root", 0, None),  # only when asked for
        ("alice", 0, "alice"),  # the operator's user
        (None, 1000, None),  # an agent that is not root: QEMU runs as the agent's user
    ],
)
def test_runs_as(monkeypatch: pytest.MonkeyPatch, asked: str | None, euid: int, runs: Any) -> None:
    monkeypatch.setattr(users.os, "geteuid", lambda: euid)
    monkeypatch.setattr(users, "namespace_label", lambda: "host")
    assert users.runs_as({"run_as": asked, "owner": OWNER, "name": "g1"}) == runs


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake /etc/passwd and tool runner: what ensure/remove would do to the host."""
    fake: dict[str, Any] = {"users": {}, "ran": [], "busy": set()}

    def getpwnam(name: str) -> Any:
        if name not in fake["users"]:
            raise KeyError(name)
        return fake["users"][name]

    def run(tool: str, args: list[str]) -> None:
        fake["ran"].append([tool, *args])
        if tool == "useradd":
            fake["users"][args[-1]] = entry(args[-1], args[args.index("--comment") + 1])
        if tool == "userdel":
            del fake["users"][args[-1]]

    monkeypatch.setattr(users.pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(users.grp, "getgrnam", lambda name: (_ for _ in ()).throw(KeyError(name)))
    monkeypatch.setattr(users, "_run", run)
    monkeypatch.setattr(users, "_busy", lambda uid: [4242] if uid in fake["busy"] else [])
    monkeypatch.setattr(users, "namespace_label", lambda: "host")
    return fake


def test_ensure_makes_a_system_user_without_home_or_shell_then_remove_takes_it(
    host: dict[str, Any],
) -> None:
    name = users.user_name(OWNER, "host")
    spec = {"name": "g1", "owner": OWNER, "run_as": name}
    users.ensure(spec)
    ((tool, *args),) = host["ran"]
    assert tool == "useradd" and args[-1] == name  # an argument list, never a shell string
    for flag in ("--system", "--user-group", "--no-create-home"):
        assert flag in args
    assert args[args.index("--shell") + 1].endswith(("nologin", "false"))
    assert args[args.index("--home-dir") + 1] == "/nonexistent"
    users.ensure(spec)  # idempotent: the user is there, and ours
    assert len(host["ran"]) == 1
    assert users.remove(OWNER) == name
    assert host["ran"][-1] == ["userdel", name] and name not in host["users"]
    assert users.remove(OWNER) is None  # nothing left to remove


def test_ensure_leaves_root_and_the_operators_users_alone(host: dict[str, Any]) -> None:
    users.ensure({"name": "g1", "owner": OWNER, "run_as": None})
    users.ensure({"name": "g1", "owner": OWNER, "run_as": "alice"})
    assert host["ran"] == []


def test_a_user_of_that_name_not_ours_is_refused_and_kept(host: dict[str, Any]) -> None:
    name = users.user_name(OWNER, "host")
    host["users"][name] = entry(name, "Somebody Else,,,")
    with pytest.raises(AgentError) as caught:
        users.ensure({"name": "g1", "owner": OWNER, "run_as": name})
    assert caught.value.kind == "conflict" and "\n" not in caught.value.message
    assert f"host user {name} exists and is not kvmnet's user for guest g1" in caught.value.message
    assert users.remove(OWNER) is None and host["ran"] == []


def test_a_user_a_process_still_runs_as_is_kept(
    host: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delete waits for a just-stopped QEMU to be reaped, then says which process holds the
    user; a failed start's cleanup keeps a user whose QEMU still runs, quietly."""
    clock = iter(range(1000))
    monkeypatch.setattr(users, "time", SimpleNamespace(monotonic=lambda: float(next(clock)),
                                                       sleep=lambda _s: None))  # fmt: skip
    name = users.user_name(OWNER, "host")
    users.ensure({"name": "g1", "owner": OWNER, "run_as": name})
    host["busy"].add(host["users"][name].pw_uid)
    with pytest.raises(AgentError) as caught:
        users.remove(OWNER)
    assert f"host user {name} of guest g1 is still used by process 4242" in caught.value.message
    users.discard({"owner": OWNER})
    assert name in host["users"]
    host["busy"].clear()  # reaped
    assert users.remove(OWNER) == name


def test_a_lab_namespaces_teardown_removes_only_its_idle_guest_users(
    host: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = users.user_name(OWNER, "netns-7")
    busy = users.user_name("kvmnet/dev/QemuGuest/g2", "netns-7")
    other_ns = users.user_name(OWNER, "netns-8")
    for name, owner, label, uid in ((mine, OWNER, "netns-7", 990),
                                    (busy, "kvmnet/dev/QemuGuest/g2", "netns-7", 991),
                                    (other_ns, OWNER, "netns-8", 992)):  # fmt: skip
        host["users"][name] = entry(name, users.comment("g", owner, label), uid)
    host["users"]["alice"] = entry("alice", "kvmnet guest g netns-7 0123", 1000)  # not ours
    host["busy"].add(991)
    monkeypatch.setattr(users.pwd, "getpwall", lambda: list(host["users"].values()))
    assert users.remove_namespace_users("netns-7") == [mine]
    assert set(host["users"]) == {busy, other_ns, "alice"}
