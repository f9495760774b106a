"""`kvmnet-picture` from a stored export (tests/fixtures/picture_export.json: a fleet of two
hosts, NAT and routed networks on h1, an isolated one on h2): the SVG parses and names every
host, bridge and guest, the text tree too, and drift from live reads is marked where the
read says a guest is gone or a bridge differs. No host, engine or root needed."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from kvmnet_provider.connection import HostError
from kvmnet_provider.picture import picture_from_export, read_live, render_svg, render_text
from kvmnet_provider.picture.cli import main
from kvmnet_provider.picture.live import _providers, differences
from kvmnet_provider.picture.state import Picture

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "picture_export.json"
EXAMPLE = REPO / "docs" / "picture-example.svg"
HOSTS = ("h1", "h2", "198.18.7.11", "198.18.7.12")
BRIDGES = ("br-in", "br-rt", "br-iso")
GUESTS = ("g1", "g2", "r1", "i1")
SVG = "{http://www.w3.org/2000/svg}"


def export() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FIXTURE.read_text())
    return loaded


def picture() -> Picture:
    return picture_from_export(export())


def svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def g2_gone(kind: str, outputs: dict[str, Any]) -> dict[str, Any] | None:
    """A live read where everything is as stated but h1's guest g2 (its QEMU is gone)."""
    if kind == "QemuGuest" and outputs["name"] == "g2":
        return None
    return {}


def test_the_state_becomes_hosts_bridges_taps_and_guests() -> None:
    pic = picture()
    assert pic.stack == "kvmnet/dev"
    assert [h.label for h in pic.hosts] == ["h1 (198.18.7.11:22)", "h2 (198.18.7.12:22)"]
    h1, h2 = pic.hosts
    assert [(b.name, b.model, b.addresses) for b in h1.bridges] == [
        ("br-in", "nat", ["10.0.1.254/24"]),
        ("br-rt", "routed", ["10.0.2.254/24"]),
    ]
    nat = h1.bridges[0]
    assert [(t.name, [g.name for g in t.guests]) for t in nat.taps] == [
        ("vm-g1", ["g1"]),
        ("vm-g2", ["g2"]),
    ]
    labels = [text for text, _ in nat.labels]
    assert labels[0].startswith("DHCP 10.0.1.0/24")
    assert "forward tcp host:8080 -> 10.0.1.11:80" in labels
    assert "NAT 10.0.1.0/24 out any NIC" in labels
    assert [(b.name, b.model) for b in h2.bridges] == [("br-iso", "isolated")]
    assert nat.taps[0].guests[0].addresses == ["10.0.1.11"]


def test_the_svg_parses_and_names_every_host_bridge_and_guest() -> None:
    texts = "\n".join(svg_texts(render_svg(picture())))
    for name in (*HOSTS, *BRIDGES):
        assert name in texts
    for guest in GUESTS:
        assert f"guest {guest}" in texts
    assert "state only" in texts and "✗" not in texts


def test_the_text_tree_names_every_host_bridge_and_guest() -> None:
    text = render_text(picture())
    for name in (*HOSTS, *BRIDGES):
        assert name in text
    for guest in GUESTS:
        assert f"guest {guest} " in text
    assert "DRIFT" not in text
    assert "└── guest g1  10.0.1.11  running pid 3000" in text


def test_a_guest_the_live_read_finds_gone_is_marked_in_both_forms() -> None:
    pic = read_live(picture(), g2_gone)
    assert [(r.kind, r.name, r.drift) for r in pic.drifted()] == [
        ("QemuGuest", "h1-nat-g2", ["gone"])
    ]
    text = render_text(pic)
    (g2_line,) = [line for line in text.splitlines() if "guest g2 " in line]
    assert g2_line.endswith("!! DRIFT: gone")
    assert "QemuGuest h1-nat-g2 on 198.18.7.11:22: gone" in text
    assert not [line for line in text.splitlines() if "guest g1 " in line and "DRIFT" in line]

    root = ET.fromstring(render_svg(pic))
    drifted = [g for g in root.iter(f"{SVG}g") if "drift" in g.get("class", "").split()]
    assert len(drifted) == 1
    words = "".join(drifted[0].itertext())
    assert "guest g2" in words and "✗ gone" in words
    assert "live reads: 1 drifted" in "".join(root.itertext())


def test_a_bridge_read_otherwise_shows_what_differs() -> None:
    def bridge_down(kind: str, outputs: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "Bridge" and outputs["name"] == "br-rt":
            return {"addresses": [], "up": False, "ifindex": outputs["ifindex"]}
        return {"leases": [{"mac": "52:54:00:00:00:01"}]} if kind == "DhcpServer" else {}

    pic = read_live(picture(), bridge_down)
    assert [(r.name, r.drift) for r in pic.drifted()] == [
        ("h1-routed-bridge", ["addresses: ['10.0.2.254/24'] -> []", "up: True -> False"])
    ]  # new DHCP leases are no drift


def test_a_host_that_cannot_be_read_is_marked_and_the_others_are_read() -> None:
    def h2_down(kind: str, outputs: dict[str, Any]) -> dict[str, Any] | None:
        if outputs["connection"]["host"] == "198.18.7.12":
            raise HostError("root@198.18.7.12:22: unreachable: Connection refused")
        return g2_gone(kind, outputs)

    pic = read_live(picture(), h2_down)
    assert [h.unreadable for h in pic.hosts] == [
        None,
        "root@198.18.7.12:22: unreachable: Connection refused",
    ]
    text = render_text(pic)
    assert "host h2 (198.18.7.12:22)  !! DRIFT: not read: root@198.18.7.12:22" in text
    assert "drift: 1 resources, 1 hosts not read" in text
    ET.fromstring(render_svg(pic))


def test_differences_compare_only_what_the_read_reports() -> None:
    stated = {"pid": 10, "status": "running", "leases": [1]}
    assert (
        differences(stated, {"pid": 10, "status": "running", "macs": ["52:54:00:00:00:01"]}) == []
    )
    assert differences(stated, {"pid": 11, "status": "running"}) == ["pid: 10 -> 11"]
    assert differences(stated, {"leases": [2]}) == []  # leases come and go


def test_a_tap_on_a_bridge_the_state_does_not_hold_draws_it_as_external() -> None:
    doc = export()
    doc["deployment"]["resources"] = [
        r for r in doc["deployment"]["resources"] if not r["urn"].endswith("h2-lab-bridge")
    ]
    (h2,) = [h for h in picture_from_export(doc).hosts if h.label.startswith("h2")]
    assert [(b.name, b.model, b.resource) for b in h2.bridges] == [("br-iso", "external", None)]
    assert "(not in this stack)" in render_text(picture_from_export(doc))


def test_the_command_draws_from_a_file_and_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stack.svg"
    assert main(["--state", str(FIXTURE), "-o", str(out)]) == 0
    assert "guest i1" in "".join(svg_texts(out.read_text()))
    monkeypatch.setattr("sys.stdin", io.StringIO(FIXTURE.read_text()))
    assert main(["--state", "-"]) == 0
    assert "└── bridge br-iso  [isolated]  no address" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("not json", "is not JSON"),
        ('{"version": 3}', "no `deployment` object"),
    ],
)
def test_the_command_says_in_one_line_what_is_wrong_with_its_input(
    content: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["--state", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kvmnet-picture: ") and said in err and len(err.splitlines()) == 1


def test_the_docs_example_is_what_the_command_draws_from_the_fixture() -> None:
    """docs/picture-example.svg: `kvmnet-picture --state tests/fixtures/picture_export.json
    -o docs/picture-example.svg`; regenerate it so when the drawing changes."""
    assert EXAMPLE.read_text() == render_svg(picture())


def test_a_bridged_networks_uplink_is_drawn_with_the_addresses_it_took_over() -> None:
    doc = export()
    network = "urn:pulumi:dev::kvmnet::kvmnet:index:BridgedNetwork::h2-lan"
    kind = "pulumi-python:dynamic/kvmnet:UplinkBridge"
    connection = {"host": "198.18.7.12", "port": 22}
    doc["deployment"]["resources"] += [
        {"urn": network, "type": "kvmnet:index:BridgedNetwork"},
        {
            "urn": f"urn:pulumi:dev::kvmnet::kvmnet:index:BridgedNetwork${kind}::h2-lan-uplink",
            "type": kind,
            "parent": network,
            "outputs": {
                "connection": connection,
                "name": "br-lan",
                "nic": "eth0",
                "addresses": [],
                "live_addresses": ["198.18.7.12/24"],
                "state": "bridged",
            },
        },
    ]
    pic = picture_from_export(doc)
    (lan,) = [b for b in pic.hosts[1].bridges if b.name == "br-lan"]
    assert (lan.model, lan.uplink, lan.addresses) == ("bridged", "eth0", ["198.18.7.12/24"])
    assert "bridge br-lan  [bridged]  198.18.7.12/24  uplink eth0" in render_text(pic)
    assert "uplink eth0" in "".join(svg_texts(render_svg(pic)))


def test_a_networks_check_is_drawn_on_its_bridge_and_read_without_a_probe() -> None:
    doc = export()
    resources = doc["deployment"]["resources"]
    dhcp = next(r for r in resources if r["type"].endswith("DhcpServer"))
    check_outputs = {
        "connection": dhcp["outputs"]["connection"],
        "bridge": dhcp["outputs"]["bridge"],
        "passed": ["gateway", "outside"],
        "checked_at": "2026-01-01T00:00:00+00:00",
    }
    resources.append(
        {
            "urn": dhcp["urn"].replace("DhcpServer::", "NetworkCheck::") + "-verify",
            "type": dhcp["type"].replace("DhcpServer", "NetworkCheck"),
            "parent": dhcp.get("parent"),
            "outputs": check_outputs,
        }
    )
    pic = picture_from_export(doc)
    labels = [text for b in pic.hosts[0].bridges for text, _ in b.labels]
    assert "verified: gateway, outside (2026-01-01T00:00:00+00:00)" in labels
    assert "NetworkCheck" in _providers()  # --live reads it (its read keeps the last result)
