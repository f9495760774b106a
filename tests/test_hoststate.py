"""The host's books (agent/hoststate.py): a document with nothing left in it goes, and its
lock file with it, without ever letting two holders in at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kvmnet_provider.agent import hoststate


@pytest.fixture()
def books(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(hoststate, "ROOT", tmp_path / "run")
    return hoststate.namespace_dir()


def test_a_document_is_kept_while_it_records_something_and_goes_with_its_lock(
    books: Path,
) -> None:
    with hoststate.locked("forwarding") as doc:
        doc["holders"] = {"owner-a": {"ipv4": True}}
        doc["previous"] = {"ipv4": "0"}
    assert sorted(p.name for p in books.iterdir()) == ["forwarding.json", "forwarding.lock"]
    with hoststate.locked("forwarding") as doc:
        assert doc["holders"] == {"owner-a": {"ipv4": True}}
        doc["holders"].clear()
        doc["previous"].clear()
    assert list(books.iterdir()) == []  # nothing of kvmnet's left in the namespace's books
    with hoststate.locked("firewall"):  # a lock and nothing else: leaves nothing either
        pass
    assert list(books.iterdir()) == []


def test_removing_the_lock_file_never_lets_two_holders_in(books: Path) -> None:
    """Each holder leaves the document empty, so every release removes the lock file while
    the others wait on it: they must lock the path's new file, one at a time."""
    inside: list[str] = []
    clashes: list[str] = []
    count = [0]

    def work(me: str) -> None:
        for _ in range(60):
            with hoststate.locked("uplinks") as doc:
                if inside:
                    clashes.append(f"{me} entered while {inside} held it")
                inside.append(me)
                doc["busy"] = {"by": me}
                seen = count[0]
                time.sleep(0.0005)
                count[0] = seen + 1  # lost if another holder ran meanwhile
                doc.pop("busy")
                inside.remove(me)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clashes == [] and count[0] == 4 * 60
    assert list(books.iterdir()) == []
