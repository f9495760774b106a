"""Autostart's books on the host (agent/boot): what the request loop records and removes, the
order and the skipping of a restore, and the unit that comes and goes with the records."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from kvmnet_provider.agent import boot, server
from kvmnet_provider.agent.boot import records, restore, unit
from kvmnet_provider.agent.errors import AgentError


@pytest.fixture()
def books(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(records, "ROOT", tmp_path / "lib")
    monkeypatch.setenv("KVMNET_UNIT_DIR", str(tmp_path / "units"))
    monkeypatch.setattr(unit, "UNIT_DIR", tmp_path / "units")
    (tmp_path / "units").mkdir()
    return tmp_path


def record_files() -> list[str]:
    directory = records.namespace_dir() / "records"
    return sorted(p.name.split("-")[0] for p in directory.glob("*.json"))


def test_a_create_is_recorded_and_its_delete_removes_it_with_the_unit(books: Path) -> None:
    boot.book("bridge.create", {"name": "br0", "owner": "o1", "stp": False},
              {"ifindex": 7, "mac": "52:54:00:00:00:01", "up": True}, True)
    (found,), skipped = records.load(records.namespace_dir() / "records")
    assert skipped == []
    assert (found.kind, found.owner, found.args["name"]) == ("bridge", "o1", "br0")
    assert found.result == {"ifindex": 7, "mac": "52:54:00:00:00:01"}
    unit_file = books / "units" / unit.UNIT_NAME
    assert "ExecStart=" in unit_file.read_text()
    launcher = records.namespace_dir() / "agent-code" / unit.LAUNCHER
    assert str(launcher) in unit_file.read_text() and launcher.is_file()
    archive = launcher.parent / unit.archive_name("kvmnet_provider")
    with zipfile.ZipFile(archive) as copy:
        assert "kvmnet_provider/agent/boot/restore.py" in copy.namelist()
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert oct(records.namespace_dir().stat().st_mode & 0o777) == "0o700"

    boot.book("link.delete", {"name": "br0", "owner": "o1"}, {"deleted": True}, True)
    assert not unit_file.exists()
    assert not records.ROOT.exists()  # the host as it was before kvmnet came


def test_autostart_false_records_nothing_and_drops_an_old_record(books: Path) -> None:
    boot.book("guest.start", {"name": "g1", "owner": "og"}, {"pid": 1}, True)
    boot.book("tap.create", {"name": "t1", "owner": "ot"}, {"ifindex": 3, "mac": "x"}, True)
    assert record_files() == ["guest", "tap"]
    boot.book("guest.read", {"name": "g1", "owner": "og"}, {"pid": 1}, False)
    assert record_files() == ["tap"]
    boot.book("dhcp.start", {"bridge": "br0", "owner": "od"}, {}, False)
    assert record_files() == ["tap"]


def test_a_batched_delete_removes_only_what_was_deleted(books: Path) -> None:
    for name in ("t1", "t2"):
        boot.book("tap.create", {"name": name, "owner": f"o-{name}"}, {}, True)
    items = [{"name": "t1", "owner": "o-t1"}, {"name": "t2", "owner": "o-t2"}]
    outcomes = [{"ok": True, "result": {}}, {"ok": False, "error": {}}]
    boot.book("link.delete.many", {"items": items}, outcomes, True)
    (left,), _ = records.load(records.namespace_dir() / "records")
    assert left.owner == "o-t2"


def test_what_a_refresh_found_gone_is_forgotten_by_the_next_boot(books: Path) -> None:
    """An object deleted behind kvmnet's back leaves the state at refresh: its records go too,
    or a restore would bring back what no stack holds any more."""
    handlers = server.build_handlers()
    forget = {"id": 1, "op": "boot.forget", "args": {"owner": "o-t1"}}
    assert server.handle(handlers, forget)["ok"]
    assert not records.ROOT.exists()  # nothing recorded: no books made to forget in
    for name in ("t1", "t2"):
        boot.book("tap.create", {"name": name, "owner": f"o-{name}"}, {}, True)
    boot.book("guest.start", {"name": "g1", "owner": "o-g1"}, {"pid": 1}, True)
    assert server.handle(handlers, forget)["ok"]
    assert record_files() == ["guest", "tap"]
    left, _ = records.load(records.namespace_dir() / "records")
    assert sorted(r.owner for r in left) == ["o-g1", "o-t2"]
    bad = {"id": 2, "op": "boot.forget", "args": {"owner": "no good!"}}
    assert server.handle(handlers, bad)["ok"] is False


def test_the_request_loop_records_a_change_that_took_and_strips_autostart(
    books: Path,
) -> None:
    seen: list[dict[str, Any]] = []

    def ensure(args: dict[str, Any]) -> dict[str, Any]:
        seen.append(args)
        return {"ok": 1}

    def broken(args: dict[str, Any]) -> None:
        raise OSError("no")

    handlers = {"input.ensure": ensure, "masquerade.ensure": broken}
    req = {"id": 1, "op": "input.ensure", "args": {"owner": "oi", "autostart": None}}
    assert server.handle(handlers, req)["ok"]
    assert seen == [{"owner": "oi"}]  # the operation never sees autostart
    assert server.handle(handlers, {"id": 2, "op": "masquerade.ensure",
                                    "args": {"owner": "om"}})["ok"] is False
    assert record_files() == ["input"]  # a failed operation is not recorded


def write(directory: Path, name: str, doc: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))


def rec(kind: str, op: str, owner: str, **args: Any) -> dict[str, Any]:
    return {"format": 1, "kind": kind, "owner": owner, "op": op,
            "args": {"owner": owner, **args}, "result": {}}


def test_restore_applies_in_dependency_order_and_skips_bad_records(
    books: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = records.namespace_dir() / "records"
    write(directory, "guest-a.json", rec("guest", "guest.start", "og", name="g1"))
    write(directory, "tap-a.json", rec("tap", "tap.create", "ot", name="t1"))
    write(directory, "input-a.json", rec("input", "input.ensure", "oi"))
    write(directory, "dhcp-a.json", rec("dhcp", "dhcp.start", "od"))
    write(directory, "forward-a.json", rec("forward", "forward.ensure", "of"))
    write(directory, "forwarding-a.json", rec("forwarding", "forwarding.acquire", "ow"))
    write(directory, "masquerade-a.json", rec("masquerade", "masquerade.ensure", "om"))
    write(directory, "corrupt.json", "{not json")
    write(directory, "newer.json", {**rec("tap", "tap.create", "on"), "format": 99})
    write(directory, "liar.json", rec("bridge", "guest.start", "ol"))
    applied: list[str] = []

    def handler(op: str) -> Any:
        def run(args: dict[str, Any]) -> dict[str, Any]:
            applied.append(op)
            if op == "dhcp.start":
                raise OSError("dnsmasq is missing")
            return {}

        return run

    outcome = restore.restore(handler)
    assert applied == ["tap.create", "forwarding.acquire", "masquerade.ensure",
                       "forward.ensure", "input.ensure", "dhcp.start", "guest.start"]
    assert outcome["failed"] == ["dhcp od"]  # the others came back all the same
    assert len(outcome["skipped"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert any("newer kvmnet" in line for line in err)
    assert any("dhcp od: not restored: dnsmasq is missing" in line for line in err)
    assert all(line.startswith("kvmnet-restore: ") for line in err)


def test_a_link_comes_back_with_its_recorded_mac(
    books: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept: list[tuple[str, Any]] = []
    monkeypatch.setattr(restore, "_keep_mac", lambda r, result: kept.append((r.kind, result)))
    directory = records.namespace_dir() / "records"
    doc = rec("tap", "tap.create", "ot", name="t1")
    doc["result"] = {"ifindex": 4, "mac": "52:54:00:00:00:09"}
    write(directory, "tap-a.json", doc)
    restore.restore(lambda op: lambda args: {"ifindex": 9, "mac": "aa:bb:cc:dd:ee:ff"})
    assert kept == [("tap", {"ifindex": 9, "mac": "aa:bb:cc:dd:ee:ff"})]


def test_an_uplink_takeover_is_confirmed_only_when_bridged(books: Path) -> None:
    directory = records.namespace_dir() / "records"
    doc = rec("uplink", "uplink.takeover", "ou", nic="eth0", bridge="br0", token="old")
    write(directory, "uplink-a.json", doc | {"result": {"ifindex": 6, "mac": "52:54:00:00:00:06"}})
    calls: list[tuple[str, dict[str, Any]]] = []

    def handler(state: str) -> Any:
        def pick(op: str) -> Any:
            def run(args: dict[str, Any]) -> dict[str, Any]:
                calls.append((op, args))
                return {"token": args.get("token"), "state": state}

            return run

        return pick

    restore.restore(handler("bridged"))
    assert [op for op, _ in calls] == ["uplink.takeover", "uplink.confirm"]
    assert calls[0][1]["token"] != "old"  # a fresh token, a boot's short rollback
    assert calls[0][1]["ifindex"] == 6  # the bridge's recorded one: Pulumi's id names it
    calls.clear()
    restore.restore(handler("address-back-on-nic"))
    assert [op for op, _ in calls] == ["uplink.takeover", "uplink.status"]


def test_an_uplink_that_cannot_come_back_says_why_in_one_line(
    books: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = records.namespace_dir() / "records"
    write(directory, "uplink-a.json", rec("uplink", "uplink.takeover", "ou", nic="eth9",
                                          bridge="br0"))  # fmt: skip

    def missing(args: dict[str, Any]) -> Any:
        raise AgentError("missing", f"NIC {args['nic']} does not exist on this host")

    outcome = restore.restore(lambda op: missing)
    assert outcome["failed"] == ["uplink br0"]
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("kvmnet-restore: uplink br0: not restored: NIC eth9 does not exist on this "
                    "host; the NIC keeps the host's own configuration")  # fmt: skip


def test_no_unit_on_a_lab_host(books: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVMNET_UNIT_DIR")
    monkeypatch.setattr(unit, "real_host", lambda: False)
    assert unit.sync(True) == "lab"
    assert not (books / "units" / unit.UNIT_NAME).exists()
    assert (records.namespace_dir() / "agent-code" / unit.LAUNCHER).is_file()


def test_the_launcher_runs_the_copy(books: Path) -> None:
    launcher = unit.keep_code()
    text = launcher.read_text()
    assert "sys.path.insert(0" in text and "agent.boot import restore" in text
    archive = launcher.parent / unit.archive_name("kvmnet_provider")
    written = archive.stat().st_mtime_ns
    assert unit.keep_code() == launcher  # unchanged code: nothing copied again
    assert archive.stat().st_mtime_ns == written
    # The restore's modules come from the archive, in an isolated interpreter as the unit's.
    where = subprocess.run(
        [sys.executable, "-I", "-c", text.replace("restore.main()", "print(restore.__file__)")
         .replace("os.path.abspath(__file__)", repr(str(launcher)))],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.strip()
    assert where == str(archive / "kvmnet_provider" / "agent" / "boot" / "restore.py")


def test_the_last_delete_leaves_guests_disks_kept_beside_the_records(books: Path) -> None:
    disk = records.namespace_dir() / "guests" / "g1" / "disk.qcow2"
    disk.parent.mkdir(parents=True)
    disk.write_text("a guest's overlay")
    boot.book("guest.start", {"name": "g1", "owner": "og"}, {}, True)
    boot.book("guest.stop", {"name": "g1", "owner": "og"}, {}, True)
    assert disk.read_text() == "a guest's overlay"
    assert sorted(p.name for p in records.namespace_path().iterdir()) == ["guests"]


def test_the_hello_says_how_the_host_comes_back(
    books: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KVMNET_UNIT_DIR")
    monkeypatch.setattr(unit, "real_host", lambda: True)
    monkeypatch.setattr(unit, "SYSTEMD_RUNNING", books / "no-such-dir")
    assert server.boot_kind() == "no-systemd"
    assert unit.sync(True) == "no-systemd"
    assert not (books / "units" / unit.UNIT_NAME).exists()  # and no unit written anywhere
    monkeypatch.setattr(unit, "real_host", lambda: False)
    assert server.boot_kind() == "lab"


def test_a_host_without_systemd_gets_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvmnet_provider.resources import base

    warned: list[str] = []
    monkeypatch.setattr(base.pulumi.log, "warn", warned.append)
    base._warn_no_autostart.cache_clear()
    base._warn_no_autostart("h9")
    base._warn_no_autostart("h9")
    assert len(warned) == 1 and warned[0].startswith("h9: no systemd")


def test_a_shipped_agent_builds_its_archive_once_in_its_code_directory(
    books: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "code" / "0123abcd"  # as hostboot's hash-named directory
    shipped.mkdir(parents=True)
    (shipped / "kvmnet_provider").symlink_to(unit.code_root() / "kvmnet_provider")
    monkeypatch.setattr(unit, "code_root", lambda: shipped)
    monkeypatch.setattr(unit, "SHIPPED_TOP", "kvmnet_provider")
    launcher = unit.keep_code()
    built = shipped / unit.archive_name("kvmnet_provider")
    copy = launcher.parent / unit.archive_name("kvmnet_provider")
    assert built.read_bytes() == copy.read_bytes()
    unit.forget_all()  # the network's last record: its copy goes, the built archive stays
    assert not copy.exists() and built.is_file()
    made = built.stat().st_mtime_ns
    unit.keep_code()  # the next network's first record copies it, not built again
    assert built.stat().st_mtime_ns == made and copy.read_bytes() == built.read_bytes()
