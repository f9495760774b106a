"""Link reads waiting for one host's session leave as one request, answered from one dump,
which answers the reads after it until a request may change the host."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import Lab, LabStatus
from kvmnet_lab.testing.snapshot import run_in

from kvmnet_provider.connection import agent_session
from kvmnet_provider.resources.linkreads import forget, read_link

pytestmark = pytest.mark.e2e


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
    finally:
        session.call_batched("link.delete", {"name": "krd0", "owner": bridge["owner"]})
        for tap in taps:
            run_in(lab_api, h1.name, ["ip", "link", "del", tap], check=False)
