"""A small locked JSON store on the host, one per network namespace.

Shared between every kvmnet agent on the host (two stacks = two providers = two agents),
so it is keyed by the network namespace's inode: lab hosts that share one filesystem keep
separate books, and a real host has just one. Kept under /run: it describes the running
kernel and must not outlive a reboot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .rundir import name_lock, private_dir, read_text, replace_text

ROOT = Path(os.environ.get("KVMNET_HOST_STATE", "/run/kvmnet"))


def namespace_dir() -> Path:
    ino = os.stat("/proc/self/ns/net").st_ino
    private_dir(ROOT)
    return private_dir(ROOT / f"netns-{ino}")


@contextmanager
def locked(name: str) -> Iterator[dict[str, Any]]:
    """Yield the document `name`, held under an exclusive lock; saved on normal exit. A
    document left with nothing in it is removed, and its lock file with it: once the last
    thing kvmnet made on the host is gone, so are its books (destroy leaves the host as it
    was)."""
    directory = namespace_dir()
    path = directory / f"{name}.json"
    with name_lock(directory, f"{name}.lock", kept_while=path):
        text = read_text(path)
        doc: dict[str, Any] = json.loads(text) if text is not None else {}
        yield doc
        if is_empty(doc):
            path.unlink(missing_ok=True)
        else:
            replace_text(path, json.dumps(doc, sort_keys=True))


def is_empty(doc: dict[str, Any]) -> bool:
    """Nothing recorded: every entry an empty table or list (`{"holders": {}, ...}`)."""
    return all(isinstance(v, (dict, list)) and not v for v in doc.values())
