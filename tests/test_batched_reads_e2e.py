"""Link reads waiting for one host's session leave as one request, answered from one dump,
which answers the reads after it until a request may change the host."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.snapshot import run_in

from kvmnet_provider.connection import agent_session
from kvmnet_provider.resources.linkreads import forget, read_link

pytestmark = pytest.mark.e2e

# Run inside a lab host: every link and address as rtdump decodes them and as pyroute2 does.
COMPARE = """
import json
from kvmnet_provider.agent.links import rtdump
from kvmnet_provider.agent.links.netlink import iproute_class, link_addresses
ipr = iproute_class()()

def record_of(msg):
    kind = msg.get(("linkinfo", "kind"))
    names = [name for _, name, _ in rtdump.INFO_DATA.get(kind or "", ())]
    return rtdump.LinkRecord(
        index=int(msg["index"]), name=msg.get_attr("IFLA_IFNAME"), flags=int(msg["flags"]),
        mac=msg.get_attr("IFLA_ADDRESS"), mtu=msg.get_attr("IFLA_MTU"),
        master=int(msg.get_attr("IFLA_MASTER") or 0), alias=msg.get_attr("IFLA_IFALIAS") or "",
        kind=kind,
        data={n: v for n in names if (v := msg.get(("linkinfo", "data", n))) is not None},
    )

ours = {r.index: r for r in rtdump.links()}
theirs = {int(m["index"]): record_of(m) for m in ipr.get_links()}
addresses = rtdump.addresses()
print(json.dumps({
    "links": sorted(r.name for r in ours.values()),
    "kinds": sorted({str(r.kind) for r in ours.values()}),
    "differ": [repr((ours.get(i), theirs[i])) for i in theirs if ours.get(i) != theirs[i]],
    "one_by_one": [i for i in theirs if rtdump.link(index=i) != theirs[i]
                   or rtdump.link(theirs[i].name) != theirs[i]],
    "extra": sorted(set(ours) - set(theirs)),
    "addresses_differ": [i for i in theirs if addresses.get(i, []) != link_addresses(ipr, i)],
}))
"""


def test_raw_dumps_decode_links_as_pyroute2_does(lab: LabStatus, lab_api: Lab) -> None:
    """Reads decode rtnetlink themselves (rtdump.py); changes go through pyroute2. Both must
    see every link alike: bridges with STP and a delay, taps with and without an owner user or
    multi-queue, enslaved or not, IPv4 and IPv6 addresses, the host's own links."""
    h1 = lab.hosts[0]
    session = agent_session(host_settings(h1))
    owner = "test/rtdump/"
    bridge = {"name": "krc0", "owner": owner + "b", "stp": True, "forward_delay": 4}
    taps = {"krc1": {}, "krc2": {"owner_user": "nobody", "multi_queue": True}}
    session.call("bridge.create", {**bridge, "addresses": ["10.9.1.1/24", "fd00:9::1/64"]})
    try:
        for tap, extra in taps.items():
            session.call(
                "tap.create", {"name": tap, "owner": owner + tap, "bridge": "krc0", **extra}
            )
        run_in(lab_api, h1.name, ["ip", "tuntap", "add", "dev", "krc3", "mode", "tap"])
        run_in(lab_api, h1.name, ["ip", "link", "set", "krc3", "alias", "by hand"])
        found = json.loads(run_in(lab_api, h1.name, [sys.executable, "-c", COMPARE]))
        assert {"krc0", "krc1", "krc2", "krc3", "lo"} <= set(found["links"])
        assert {"bridge", "tun"} <= set(found["kinds"])
        assert found["differ"] == [] and found["extra"] == [] and found["one_by_one"] == []
        assert found["addresses_differ"] == []
        listing = session.call("link.read.all", {})
        assert listing["krc0"]["stp"] is True and listing["krc0"]["forward_delay"] == 4
        assert listing["krc0"]["addresses"] == ["10.9.1.1/24", "fd00:9::1/64"]
        krc2 = listing["krc2"]
        assert krc2["owner_user"] == "nobody" and krc2["multi_queue"] and krc2["master"] == "krc0"
        assert listing["krc3"]["alias"] == "by hand" and listing["krc3"]["owner"] is None
    finally:  # kvmnet's links through kvmnet, so their boot records go with them
        for tap in taps:
            session.call_batched("link.delete", {"name": tap, "owner": owner + tap})
        session.call_batched("link.delete", {"name": "krc0", "owner": bridge["owner"]})
        run_in(lab_api, h1.name, ["ip", "link", "del", "krc3"], check=False)


def test_batched_link_reads_answer_as_single_reads_do(lab: LabStatus, lab_api: Lab) -> None:
    h1 = lab.hosts[0]
    session = agent_session(host_settings(h1))
    owner = "test/reads/TapPort/"
    bridge = {"name": "krd0", "owner": "test/reads/Bridge/b", "stp": False, "forward_delay": 0}
    taps = [f"krt{k}" for k in range(5)]
    session.call("bridge.create", {**bridge, "addresses": ["10.9.0.1/24"]})
    try:
        for tap in taps:
            session.call("tap.create", {"name": tap, "owner": owner + tap, "bridge": "krd0"})
        names = ["krd0", *taps, "lo", "krdnone"]
        single = {n: session.call("link.read", {"name": n}) for n in names}
        assert single["krd0"]["addresses"] == ["10.9.0.1/24"]
        assert single["krt0"]["master"] == "krd0" and single["krdnone"] is None
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(names) + 1) as pool:
            with session.exclusive():  # hold the session: every read queues behind it
                futures = {
                    n: pool.submit(session.call_batched, "link.read", {"name": n}) for n in names
                }
                bad = pool.submit(session.call_batched, "link.read", {"name": "no good!"})
                deadline = time.monotonic() + 10
                while len(session._queued.get("link.read", [])) < len(names) + 1:
                    assert time.monotonic() < deadline, "the reads did not queue"
                    time.sleep(0.01)
            assert {n: f.result(timeout=30) for n, f in futures.items()} == single
            with pytest.raises(Exception, match="no good"):
                bad.result(timeout=30)
        # A read right after the batch is answered from its dump, alike; a change on the host
        # ends the dump's use: the next read sees the new link.
        assert session.call("link.read", {"name": "krt1"}) == single["krt1"]
        session.call("tap.create", {"name": "krtnew", "owner": owner + "krtnew", "bridge": "krd0"})
        taps.append("krtnew")
        assert session.call("link.read", {"name": "krtnew"})["master"] == "krd0"
        many = session._result(
            session._exchange("link.read.many", {"items": [{"name": "krtnew"}]}, 30)
        )
        assert many[0]["ok"] and many[0]["result"]["name"] == "krtnew"

        # The provider's reads: one listing of all the host's links answers them; a link
        # change through the provider makes the next read ask the host again.
        listing = session.call("link.read.all", {})
        assert {n: listing.get(n) for n in names} == {**single, "krdnone": None}
        forget(session)
        assert read_link(session, "krt2") == single["krt2"]
        assert read_link(session, "krdnone") is None
        run_in(lab_api, h1.name, ["ip", "tuntap", "add", "dev", "krtx", "mode", "tap"])
        taps.append("krtx")
        forget(session)
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            with session.exclusive():  # readers arriving together share one listing
                reads = [pool.submit(read_link, session, n) for n in ("krtx", "krt3", "lo")]
                deadline = time.monotonic() + 10
                while len(session._queued.get("link.read.all", [])) < 3:
                    assert time.monotonic() < deadline, "the reads did not queue"
                    time.sleep(0.01)
            krtx, krt3, lo = (r.result(timeout=30) for r in reads)
        assert krtx["owner"] is None and krt3 == single["krt3"] and lo == single["lo"]
    finally:  # kvmnet's links through kvmnet, so their boot records go with them
        for tap in taps:
            if tap != "krtx":  # made by hand
                session.call_batched("link.delete", {"name": tap, "owner": owner + tap})
        session.call_batched("link.delete", {"name": "krd0", "owner": bridge["owner"]})
        run_in(lab_api, h1.name, ["ip", "link", "del", "krtx"], check=False)
