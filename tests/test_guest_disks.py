"""Guests' disks and cloud-init, without the engine: the seed ISO read back with pycdlib, the
cloud_init and disk rules at check (naming the property, never quoting user-data), QEMU's
drives, qemu-img's argument lists, and the agent's disk directory made with the real qemu-img
in a temporary root."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pulumi
import pycdlib
import pytest

from kvmnet_provider.agent.errors import AgentError
from kvmnet_provider.agent.guests import argv as qemu_argv
from kvmnet_provider.agent.guests import disks
from kvmnet_provider.cloudinit import build_seed, normalise_cloud_init, seed_files
from kvmnet_provider.errors import ConfigError
from kvmnet_provider.program.hosts import check_stack_config
from kvmnet_provider.resources.guest import QemuGuestProvider
from kvmnet_provider.spec import guest as guest_spec
from kvmnet_provider.spec.validate import InvalidInput

CONN = {"host": "198.18.0.10", "known_hosts": "/tmp/kh", "private_key_path": "/tmp/id"}
SECRET = "s3cret-pass-phrase"
SEED_B64 = base64.b64encode(build_seed({"user-data": b"#cloud-config\n"})).decode()
USER_DATA = {"hostname": "g1", "users": [{"name": "ops", "passwd": SECRET, "uid": 1000}]}


def news(**overrides: Any) -> dict[str, Any]:
    props = {
        "connection": CONN,
        "owner": "p/s/QemuGuest/g1",
        "name": "g1",
        "kernel": "/img/vmlinuz",
        "accelerator": "tcg",
        "base_image": "/var/lib/images/base.qcow2",
        "cloud_init": {"user_data": USER_DATA},
    }
    props.update(overrides)
    return props


def read_iso(data: bytes) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    return iso


def iso_file(iso: pycdlib.PyCdlib, **path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue()


# --- the seed -------------------------------------------------------------------------------
def test_seed_iso_holds_the_nocloud_files_under_all_three_namings() -> None:
    normal = normalise_cloud_init(
        {"user_data": USER_DATA, "network_config": {"version": 2, "ethernets": {}}}
    )
    files = seed_files(normal, "g1")
    iso = read_iso(build_seed(files))
    try:
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
        assert iso.has_joliet() and iso.has_rock_ridge()
        for name in ("user-data", "meta-data", "network-config"):
            assert iso_file(iso, rr_path=f"/{name}") == files[name]
            assert iso_file(iso, joliet_path=f"/{name}") == files[name]
            iso_name = "/" + name.upper().replace("-", "_") + ".;1"
            assert iso_file(iso, iso_path=iso_name) == files[name]
    finally:
        iso.close()
    user = files["user-data"].decode()
    assert user.startswith("#cloud-config\n")
    assert "uid: 1000\n" in user  # a whole number stays one (Pulumi sends floats)
    meta = files["meta-data"].decode()
    assert "local-hostname: g1\n" in meta and "instance-id: g1-" in meta


def test_seed_is_deterministic_whatever_the_clock_and_zone() -> None:
    files = seed_files(normalise_cloud_init({"user_data": USER_DATA}), "g1")
    first = build_seed(files)
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Auckland"
    time.tzset()
    try:
        time.sleep(1.1)
        assert build_seed(files) == first
    finally:
        if old_tz is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = old_tz
        time.tzset()
    assert time.time() > 1e9  # pycdlib's clock was lent, not kept


def test_meta_data_defaults_give_way_and_the_instance_id_follows_the_content() -> None:
    a = seed_files(normalise_cloud_init({"user_data": USER_DATA}), "g1")["meta-data"]
    b = seed_files(normalise_cloud_init({"user_data": {"hostname": "x"}}), "g1")["meta-data"]
    assert a != b  # another user-data: another instance, cloud-init runs again
    own = normalise_cloud_init(
        {"user_data": USER_DATA, "meta_data": {"instance-id": "i-1", "local-hostname": "web"}}
    )
    assert seed_files(own, "g1")["meta-data"] == b"instance-id: i-1\nlocal-hostname: web\n"


def test_provider_sends_the_seed_not_cloud_init() -> None:
    provider = QemuGuestProvider()
    checked = provider.check({}, news())
    assert not checked.failures
    spec = provider.spec(checked.inputs)
    assert "cloud_init" not in spec
    iso = read_iso(base64.b64decode(spec["seed_iso"]))
    try:
        assert SECRET.encode() in iso_file(iso, rr_path="/user-data")
    finally:
        iso.close()
    assert guest_spec.normalise_spec(spec)["seed_iso"][32769:32774] == b"CD001"


# --- rules at check -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cloud_init", "message"),
    [
        ({"user_data": f"#cloud-config\npassword: [{SECRET}"}, "cloud_init.user_data is not valid"),
        ({"user_data": f"password: {SECRET}\n"}, "cloud_init.user_data text must start with"),
        ({"user_data": "#cloud-config\n- a\n- b\n"}, "cloud_init.user_data must be a YAML mapping"),
        ({"user_data": 42}, "cloud_init.user_data must be an object"),
        ({"user_data": USER_DATA, "vendor_data": {}}, "cloud_init has unknown key 'vendor_data'"),
        ({"meta_data": {}}, "cloud_init.user_data is required"),
        ({"user_data": USER_DATA, "meta_data": "x"}, "cloud_init.meta_data must be an object"),
        (
            {"user_data": USER_DATA, "meta_data": {"instance-id": ""}},
            "cloud_init.meta_data.instance-id must be a non-empty string",
        ),
        (
            {"user_data": USER_DATA, "network_config": {"ethernets": {}}},
            "cloud_init.network_config must have `version: 1` or `version: 2`",
        ),
        ({"user_data": USER_DATA, "network_config": "a: [b"}, "cloud_init.network_config is not"),
        ("#cloud-config\n", "cloud_init must be an object"),
    ],
)
def test_bad_cloud_init_fails_check_naming_the_key_without_quoting_it(
    cloud_init: Any, message: str
) -> None:
    result = QemuGuestProvider().check({}, news(cloud_init=cloud_init))
    assert [f.property for f in result.failures] == ["cloud_init"], result.failures
    assert result.failures[0].reason.startswith(message), result.failures[0].reason
    assert SECRET not in result.failures[0].reason


@pytest.mark.parametrize(
    ("overrides", "prop"),
    [
        ({"base_format": "vmdk"}, "base_format"),
        ({"base_image": "images/base.qcow2"}, "base_image"),
        ({"base_image": "/var/lib/../etc/shadow"}, "base_image"),
        ({"base_image": "/img/a,b.qcow2"}, "base_image"),
        ({"base_image": "nbd:host:10809"}, "base_image"),
        ({"disk_size_gib": 0}, "disk_size_gib"),
        ({"disk_size_gib": 1.5}, "disk_size_gib"),
        ({"disk_size_gib": "10G"}, "disk_size_gib"),
        ({"keep_disk": "yes"}, "keep_disk"),
    ],
)
def test_bad_disk_inputs_fail_check_naming_the_property(
    overrides: dict[str, Any], prop: str
) -> None:
    result = QemuGuestProvider().check({}, news(**overrides))
    assert [f.property for f in result.failures] == [prop], result.failures
    spec = {k: v for k, v in news(**overrides).items() if k not in ("connection", "cloud_init")}
    with pytest.raises(InvalidInput, match=f"^{prop} "):
        guest_spec.normalise_spec(spec)  # the host's own check


@pytest.mark.parametrize(
    ("overrides", "prop"),
    [
        ({"base_image": None, "disk_size_gib": 4}, "disk_size_gib"),
        ({"disks": [{"path": "/var/lib/images/base.qcow2", "format": "qcow2"}]}, "base_image"),
    ],
)
def test_disk_cross_field_rules(overrides: dict[str, Any], prop: str) -> None:
    result = QemuGuestProvider().check({}, news(**overrides))
    assert prop in [f.property for f in result.failures], result.failures


def test_a_base_image_alone_is_something_to_boot() -> None:
    result = QemuGuestProvider().check({}, news(kernel=None, cloud_init=None))
    assert not result.failures, result.failures
    assert result.inputs["base_format"] == "qcow2" and result.inputs["keep_disk"] is False


def test_diff_sees_cloud_init_through_the_digest_the_outputs_keep() -> None:
    provider = QemuGuestProvider()
    inputs = provider.check({}, news()).inputs
    outputs = provider._outputs(inputs, {"pid": 1})
    assert outputs["cloud_init"] is None and len(outputs["cloud_init_sha256"]) == 64
    assert SECRET not in json.dumps(outputs)
    assert not provider.diff("id", outputs, inputs).changes
    changed = provider.check({}, news(cloud_init={"user_data": {"hostname": "g2"}})).inputs
    assert provider.diff("id", outputs, changed).replaces == ["cloud_init"]
    dropped = provider.check({}, news(cloud_init=None)).inputs
    assert provider.diff("id", outputs, dropped).replaces == ["cloud_init"]
    never = provider._outputs(dropped, {"pid": 1})
    assert not provider.diff("id", never, dropped).changes
    assert provider.diff("id", never, inputs).replaces == ["cloud_init"]
    keep = provider.check({}, news(keep_disk=True)).inputs
    d = provider.diff("id", outputs, keep)
    assert d.changes and not d.replaces  # keep_disk only matters at delete
    assert provider.diff("id", outputs, {**inputs, "base_image": "/b2.qcow2"}).replaces == [
        "base_image"
    ]


# --- QEMU's drives --------------------------------------------------------------------------
def test_overlay_is_the_first_disk_and_the_seed_a_read_only_cdrom() -> None:
    spec = guest_spec.normalise_spec(
        {
            "name": "g1",
            "owner": "p/s/QemuGuest/g1",
            "base_image": "/img/base.qcow2",
            "disks": [{"path": "/img/data.raw", "format": "raw"}],
        }
    )
    paths = {
        **qemu_argv.guest_paths(Path("/run/kvmnet/netns-1/guests/g1"), {}),
        "disk_path": "/var/lib/kvmnet/guests/g1/disk.qcow2",
        "seed_path": "/var/lib/kvmnet/guests/g1/seed.iso",
    }
    argv = qemu_argv.build_argv(spec, paths, "tcg")
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives == [
        "file=/var/lib/kvmnet/guests/g1/disk.qcow2,format=qcow2,if=virtio",
        "file=/img/data.raw,format=raw,if=virtio",
        "file=/var/lib/kvmnet/guests/g1/seed.iso,format=raw,if=ide,media=cdrom,readonly=on",
    ]
    assert argv.index("-sandbox") < argv.index("-drive")  # the hardening stays


# --- the agent's disk directory ---------------------------------------------------------------
@pytest.fixture
def disk_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "varlib"
    monkeypatch.setattr(disks, "ROOT", root)
    return root


def agent_spec(base: Path | None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": "g1", "owner": "p/s/QemuGuest/g1", "kernel": "/img/vmlinuz"}
    if base is not None:
        raw["base_image"] = str(base)
    raw.update(extra)
    return guest_spec.normalise_spec(raw)


def test_disk_dirs_are_keyed_by_namespace_except_in_the_hosts_own(
    disk_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stat = os.stat
    inodes = {"/proc/self/ns/net": 111, "/proc/1/ns/net": 111}

    def fake_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if path in inodes:
            return SimpleNamespace(st_ino=inodes[path])
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(disks.os, "stat", fake_stat)
    assert disks.guest_dir("g1") == disk_root / "guests" / "g1"  # a real host: the API's path
    inodes["/proc/1/ns/net"] = 222  # a lab host: another namespace on a shared filesystem
    assert disks.guest_dir("g1") == disk_root / "netns-111" / "guests" / "g1"
    assert not disk_root.exists()  # a path asked for is not made
    assert disks.release("g1", "p/s/QemuGuest/g1", keep_disk=False) is None
    assert not disk_root.exists()
    # a lab host's levels go with its last guest; the host's own guests dir stays
    for host_ino in (222, 111):
        inodes["/proc/1/ns/net"] = host_ino
        for name in ("g1", "g2"):
            assert disks.prepare(agent_spec(None, name=name, seed_iso=SEED_B64)) is False
        assert disks.release("g1", "p/s/QemuGuest/g1", keep_disk=False) is None
        assert disks.guest_dir("g2").is_dir()
        assert disks.release("g2", "p/s/QemuGuest/g1", keep_disk=False) is None
        assert not disks.guest_dir("g2").exists()
    assert sorted(p.name for p in disk_root.iterdir()) == ["guests"]


def test_qemu_img_gets_argument_lists(
    disk_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"")

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        assert kwargs.get("umask") == 0o077 and "shell" not in kwargs
        if argv[1] == "info":
            out = json.dumps([{"format": "qcow2", "virtual-size": 64 << 20}])
            return subprocess.CompletedProcess(argv, 0, out, "")
        Path(argv[-2]).write_bytes(b"QFI\xfb")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(disks.subprocess, "run", fake_run)
    monkeypatch.setattr(disks.shutil, "which", lambda _: "/usr/bin/qemu-img")
    assert disks.prepare(agent_spec(base, disk_size_gib=2)) is True
    overlay_dir = disks.guest_dir("g1")
    assert calls == [
        ["/usr/bin/qemu-img", "info", "--backing-chain", "--output=json", "-U", str(base)],
        [
            "/usr/bin/qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(base),
            "-F",
            "qcow2",
            str(overlay_dir / "disk.qcow2.new"),
            str(2 << 30),
        ],
    ]


@pytest.mark.e2e  # the real qemu-img, and fchown to another user as root
def test_overlay_and_seed_on_disk_with_the_real_qemu_img(disk_root: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    before = base.read_bytes()
    seed = base64.b64encode(build_seed({"user-data": b"#cloud-config\n"})).decode()
    spec = agent_spec(base, seed_iso=seed, run_as="nobody")
    assert disks.prepare(spec) is True
    d = disks.guest_dir("g1")
    assert d.is_relative_to(disk_root)
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700 and os.lstat(d).st_uid == 0
    for name in ("disk.qcow2", "seed.iso"):
        st = os.lstat(d / name)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid != 0, name  # nobody's
    info = disks.image_info(str(d / "disk.qcow2"))
    assert info["backing-filename"] == str(base) and info["backing-filename-format"] == "qcow2"

    # kept, then taken back (grown), but never from another base and never shrunk
    assert disks.release("g1", "p/s/QemuGuest/g1", keep_disk=True) == str(d / "disk.qcow2")
    assert sorted(p.name for p in d.iterdir()) == ["disk.json", "disk.qcow2"]
    assert disks.prepare(agent_spec(base, disk_size_gib=1)) is False
    assert disks.image_info(str(d / "disk.qcow2"))["virtual-size"] == 1 << 30
    other = tmp_path / "other.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(other), "64M"], check=True)
    with pytest.raises(AgentError, match="was made from .*base.qcow2"):
        disks.prepare(agent_spec(other))
    assert disks.release("g1", "p/s/QemuGuest/g9", keep_disk=False) is None  # not its own
    assert d.exists()
    with pytest.raises(AgentError, match="belongs to kvmnet resource p/s/QemuGuest/g1.*own"):
        disks.prepare({**agent_spec(base), "owner": "p/s/QemuGuest/g9"})
    assert disks.release("g1", "p/s/QemuGuest/g1", keep_disk=False) is None
    assert not d.exists()
    assert base.read_bytes() == before  # the base is only ever read


@pytest.mark.usefixtures("disk_root")
def test_base_image_missing_or_in_another_format_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match=r"^guest g1: base_image /nowhere/b.qcow2 does not exist"):
        disks.prepare(agent_spec(Path("/nowhere/b.qcow2")))
    raw = tmp_path / "base.raw"
    raw.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(AgentError, match="is a raw image, not qcow2; set base_format"):
        disks.prepare(agent_spec(raw))
    with pytest.raises(AgentError, match="smaller than base_image"):
        big = tmp_path / "big.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "2G"], check=True)
        disks.prepare(agent_spec(big, disk_size_gib=1))
    assert not any(disks.disks_root().iterdir())  # refused before anything was made
    assert disks.prepare(agent_spec(raw, base_format="raw")) is True
    info = disks.image_info(str(disks.guest_dir("g1") / "disk.qcow2"))
    assert info["backing-filename-format"] == "raw"


# --- what a base image is trusted with -------------------------------------------------------
def qcow2(path: Path, *extra: str) -> Path:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), "64M"], check=True
    )
    return path


@pytest.mark.usefixtures("disk_root")
def test_a_base_with_a_backing_file_of_its_own_is_refused(tmp_path: Path) -> None:
    host_file = tmp_path / "secret.raw"
    host_file.write_bytes(b"host secrets\n" * 4096)
    base = qcow2(tmp_path / "base.qcow2", "-b", str(host_file), "-F", "raw")
    with pytest.raises(AgentError) as raised:
        disks.prepare(agent_spec(base))
    said = str(raised.value)
    assert said.startswith(f"guest g1: base_image {base} has a backing file of its own")
    assert str(host_file) in said and "qemu-img convert" in said and "\n" not in said
    # a backing file that is gone is refused the same way (qemu-img cannot read the chain)
    gone = qcow2(tmp_path / "gone.qcow2")
    orphan = qcow2(tmp_path / "orphan.qcow2", "-b", str(gone), "-F", "qcow2")
    gone.unlink()
    with pytest.raises(AgentError, match="has a backing file of its own"):
        disks.prepare(agent_spec(orphan))
    # an external data file is another host file too
    external = tmp_path / "external.qcow2"
    data = tmp_path / "external.data"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(external), "1M"],
        check=True,
    )
    with pytest.raises(AgentError, match="keeps its data in another file"):
        disks.prepare(agent_spec(external))
    assert not any(disks.disks_root().iterdir())  # refused before anything was made


@pytest.mark.usefixtures("disk_root")
def test_a_base_writable_by_others_or_in_such_a_directory_is_refused(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir(mode=0o755)
    base = qcow2(images / "base.qcow2")
    base.chmod(0o664)
    with pytest.raises(AgentError, match=r"^guest g1: base_image .* writable by group or others"):
        disks.prepare(agent_spec(base))
    base.chmod(0o644)
    images.chmod(0o1777)
    with pytest.raises(AgentError) as raised:
        disks.prepare(agent_spec(base))
    said = str(raised.value)
    assert f"the directory of base_image {images} is writable" in said and "chmod go-w" in said
    images.chmod(0o755)
    # a link is judged by what it points at, and by the directory the link is in
    links = tmp_path / "links"
    links.mkdir(mode=0o777)
    links.chmod(0o777)
    (links / "base.qcow2").symlink_to(base)
    with pytest.raises(AgentError, match=f"the link base_image {links} is writable"):
        disks.prepare(agent_spec(links / "base.qcow2"))
    if os.geteuid() == 0:
        os.chown(base, 65534, 65534)
        with pytest.raises(AgentError, match="is owned by uid 65534, not root.*; fix: chown root:"):
            disks.prepare(agent_spec(base))
        os.chown(base, 0, 0)
    assert disks.prepare(agent_spec(base)) is True  # trusted: the overlay is made


@pytest.mark.usefixtures("disk_root")
def test_a_kept_overlay_stays_aside_when_the_guest_is_replaced_onto_another_base(
    tmp_path: Path,
) -> None:
    first, second = qcow2(tmp_path / "a.qcow2"), qcow2(tmp_path / "b.qcow2")
    assert disks.prepare(agent_spec(first)) is True
    d = disks.guest_dir("g1")
    kept = disks.release("g1", "p/s/QemuGuest/g1", keep_disk=True)
    assert kept == str(d / "disk.qcow2")
    assert disks.prepare(agent_spec(second)) is True  # another base: a new overlay
    aside = [p for p in d.iterdir() if p.name.startswith("kept-")]
    assert len(aside) == 1 and aside[0].suffix == ".qcow2"
    assert disks.image_info(str(aside[0]))["backing-filename"] == str(first)
    assert disks.image_info(str(d / "disk.qcow2"))["backing-filename"] == str(second)
    # a delete without keep_disk removes the guest's overlay, never what was kept aside
    assert disks.release("g1", "p/s/QemuGuest/g1", keep_disk=False) is None
    assert sorted(p.name for p in d.iterdir()) == ["disk.json", aside[0].name]
    assert disks.prepare(agent_spec(second)) is True  # and the guest can come back
    disks.release("g1", "p/s/QemuGuest/g1", keep_disk=False)


def test_disk_size_only_grows_at_preview_and_a_replacement_says_what_it_does_to_the_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = QemuGuestProvider()
    olds = provider.check({}, news(disk_size_gib=2)).inputs
    olds["disk_size_gib"] = 2.0  # the engine hands numbers back as floats
    outputs = provider._outputs(
        olds, {"pid": 1, "disk_path": "/var/lib/kvmnet/guests/g1/disk.qcow2"}
    )
    for size in (2, 3):
        grown = provider.check(olds, news(disk_size_gib=size))
        assert not grown.failures
        assert not provider.diff("id", outputs, grown.inputs).replaces  # grown in place
    for size, said in ((1, "disk_size_gib 1 is smaller than the 2 GiB"), (None, "cannot be unset")):
        shrunk = provider.check(olds, news(disk_size_gib=size))
        assert [f.property for f in shrunk.failures] == ["disk_size_gib"]
        assert said in shrunk.failures[0].reason and "only grows" in shrunk.failures[0].reason
    # another base is another disk: any size
    assert not provider.check(olds, news(disk_size_gib=1, base_image="/img/b2.qcow2")).failures

    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warned.append(msg))
    provider.diff("id", outputs, provider.check({}, news(memory_mib=512)).inputs)
    assert warned == []  # an update keeps the disk: nothing to say
    d = provider.diff("id", outputs, provider.check({}, news(base_image="/img/b2.qcow2")).inputs)
    assert d.replaces == ["base_image"]
    assert warned == [
        "guest g1: replacing it (base_image) DELETES its disk "
        "198.18.0.10:/var/lib/kvmnet/guests/g1/disk.qcow2; to keep it, set keep_disk: true "
        "and run up before this change"
    ]
    kept = {**outputs, "keep_disk": True}
    provider.diff("id", kept, provider.check({}, news(keep_disk=True, run_as="nobody")).inputs)
    assert warned[-1].startswith("guest g1: replacing it (run_as) keeps its disk 198.18.0.10:")
    no_disk = {**outputs, "disk_path": None}
    provider.diff("id", no_disk, provider.check({}, news(base_image="/img/b2.qcow2")).inputs)
    assert len(warned) == 2


# --- stack config -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("guest", "line"),
    [
        ({"baseFormat": "vmdk"}, "kvmnet:guests[0].baseFormat: must be one of raw, qcow2"),
        ({"baseImage": "base.qcow2"}, "kvmnet:guests[0].baseImage: must be an absolute path"),
        ({"diskSizeGib": 0}, "kvmnet:guests[0].diskSizeGib: must be between 1 and 65536"),
        ({"keepDisk": "yes"}, "kvmnet:guests[0].keepDisk: must be true or false"),
        ({"cloudInit": {"userData": "#cloud-config\na: [b"}}, "guests[0].cloudInit.userData: is"),
        ({"cloudInit": {"userData": {}, "vendorData": {}}}, "cloudInit.vendorData: unknown key"),
        (
            {"cloudInit": {"userData": {}, "metaData": {"instance-id": 5}}},
            "kvmnet:guests[0].cloudInit.metaData.instance-id: must be a non-empty string",
        ),
    ],
)
def test_stack_config_disk_keys_fail_naming_the_key(guest: dict[str, Any], line: str) -> None:
    pulumi.runtime.set_all_config({"kvmnet:guests": json.dumps([{"name": "g1", **guest}])})
    try:
        with pytest.raises(ConfigError) as failure:
            check_stack_config(pulumi.Config("kvmnet"))
        assert line in str(failure.value), str(failure.value)
    finally:
        pulumi.runtime.set_all_config({})


def test_stack_config_disk_keys_reach_the_guest_spec() -> None:
    from kvmnet_provider.program.guests import guest_specs

    raw = [
        {
            "name": "g1",
            "address": "10.0.1.11",
            "baseImage": "/img/base.qcow2",
            "baseFormat": "raw",
            "diskSizeGib": 8,
            "keepDisk": True,
            "cloudInit": {"userData": USER_DATA, "networkConfig": {"version": 2}},
        }
    ]
    pulumi.runtime.set_all_config({})
    (spec,) = guest_specs(raw, pulumi.Config("kvmnet"), "10.0.1.0/24", "10.0.1.254")
    assert (spec.base_image, spec.base_format, spec.disk_size_gib, spec.keep_disk) == (
        "/img/base.qcow2",
        "raw",
        8,
        True,
    )
    assert spec.cloud_init is not None and spec.cloud_init.user_data == USER_DATA
    assert spec.cloud_init.network_config == {"version": 2}
