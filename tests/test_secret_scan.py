"""The secret scan of test_connection_e2e can fail: it sees a key inside a base64 pickle
(in process: no lab)."""

from __future__ import annotations

import base64
import json
import pickle

from test_connection_e2e import scan_for_secrets


def test_secret_scan_sees_into_pickles_and_base64() -> None:
    """The scan itself can fail: a key inside a base64 pickle (as `__provider`) is found."""
    material = ["b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB"]
    pickled = pickle.dumps({"key": "-----BEGIN OPENSSH PRIVATE KEY-----\n" + material[0]})
    export = json.dumps({"__provider": base64.b64encode(pickled).decode()})
    assert material[0] not in export and "PRIVATE KEY" not in export
    assert len(scan_for_secrets({"export": export}, material)) == 2
    assert scan_for_secrets({"export": json.dumps({"__provider": "AAAA" * 10})}, material) == []
