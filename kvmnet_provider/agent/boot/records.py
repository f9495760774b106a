"""What the host must bring back after a reboot: the applied request of each object.

After every mutating operation that succeeded, the request loop hands its op, args and result
here (server.py). A create or update writes the object's record (its op and args, which hold
the whole desired state, and what a restore needs to come back the same: a link's MAC and
ifindex); a delete removes it. Records live under /var/lib/kvmnet (kept across reboots,
unlike /run/kvmnet), one directory per network namespace like hoststate's books, files 0600
in 0700 directories, keyed by the object's kind and owner mark. An object whose args say
`"autostart": false` is not recorded (and loses a record it had).

The host already holds everything in a record: the same args reach its kernel, dnsmasq's
config and the guests' seed files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..rundir import private_dir, read_text, replace_text

ROOT = Path(os.environ.get("KVMNET_BOOT_STATE", "/var/lib/kvmnet"))
FORMAT = 1  # a record of a higher format is a newer kvmnet's: skipped, never guessed at

# The order a restore applies kinds in: what each needs exists before it (links before the
# rules naming them, the bridge before its taps, rules and dnsmasq before the guests).
KINDS = (
    "bridge",
    "uplink",
    "tap",
    "forwarding",
    "masquerade",
    "forward",
    "dnat",
    "input",
    "dhcp",
    "guest",
)

# op -> kind whose record it writes
WRITES = {
    "bridge.create": "bridge",
    "bridge.update": "bridge",
    "tap.create": "tap",
    "tap.update": "tap",
    "forwarding.acquire": "forwarding",
    "masquerade.ensure": "masquerade",
    "dnat.ensure": "dnat",
    "forward.ensure": "forward",
    "input.ensure": "input",
    "uplink.takeover": "uplink",
    "dhcp.start": "dhcp",
    "guest.start": "guest",
}
# op -> kinds whose record (of the args' owner) it removes
REMOVES = {
    "link.delete": ("bridge", "tap"),
    "adopted.release": ("bridge",),  # an adopted bridge given back, or a bridge deleted
    "forwarding.release": ("forwarding",),
    "masquerade.remove": ("masquerade",),
    "dnat.remove": ("dnat",),
    "forward.remove": ("forward",),
    "input.remove": ("input",),
    "uplink.release": ("uplink",),
    "uplink.forget": ("uplink",),  # a take-over the host rolled back: nothing of ours is there
    "dhcp.stop": ("dhcp",),
    "guest.stop": ("guest",),
}
# An op's prefix -> the kinds of records it may stand for.
KINDS_OF = {"link": ("bridge", "tap"), "adopted": ("bridge",), **{kind: (kind,) for kind in KINDS}}
# What of a link's answer a restore gives the link again, so ids and outputs stay the same.
KEPT_RESULT = ("ifindex", "mac")


@dataclass(frozen=True)
class Record:
    kind: str
    owner: str
    op: str
    args: dict[str, Any]
    result: dict[str, Any]
    path: Path


class BadRecord(Exception):
    """A record the restore skips: unreadable, or written by a newer kvmnet."""


def namespace_path() -> Path:
    """This network namespace's books' directory (not made here)."""
    return ROOT / f"netns-{os.stat('/proc/self/ns/net').st_ino}"


def namespace_dir() -> Path:
    private_dir(ROOT)
    return private_dir(namespace_path())


def records_dir() -> Path:
    return private_dir(namespace_dir() / "records")


def record_path(directory: Path, kind: str, owner: str) -> Path:
    digest = hashlib.sha256(owner.encode()).hexdigest()[:24]
    return directory / f"{kind}-{digest}.json"


# Asked by the provider when a refresh finds an object gone: the state forgets it, and so
# does the next boot (a restore would bring back what no stack holds any more).
FORGET = "boot.forget"


def is_mutation(op: str) -> bool:
    return op in WRITES or op in REMOVES or op in ("link.delete.many", FORGET)


def note(op: str, args: dict[str, Any], result: Any, autostart: bool = True) -> bool:
    """Keep the books for one operation that succeeded. Returns whether records changed."""
    if op == "link.delete.many":
        changed = False
        for item, outcome in zip(args.get("items") or [], result or [], strict=False):
            if isinstance(item, dict) and isinstance(outcome, dict) and outcome.get("ok"):
                changed |= note("link.delete", item, outcome.get("result"))
        return changed
    owner = args.get("owner")
    if not isinstance(owner, str) or not owner:
        return False
    directory = records_dir()
    if op == FORGET:  # an owner mark is one resource's: every record under it is that one's
        return _remove(directory, KINDS, owner)
    if op in REMOVES:
        return _remove(directory, REMOVES[op], owner)
    if not autostart:  # any request for an opted-out object (a read too) drops its record
        return _remove(directory, KINDS_OF.get(op.split(".", 1)[0], ()), owner)
    kind = WRITES.get(op)
    if kind is None:
        return False
    kept = {k: result[k] for k in KEPT_RESULT if isinstance(result, dict) and k in result}
    # An uplink's token and rollback are the change's own: a restore makes new ones.
    args = {k: v for k, v in args.items() if k not in ("token",)}
    doc = {"format": FORMAT, "kind": kind, "owner": owner, "op": op, "args": args, "result": kept}
    path = record_path(directory, kind, owner)
    text = json.dumps(doc, sort_keys=True)
    if read_text(path) == text:
        return False
    replace_text(path, text)
    return True


def _remove(directory: Path, kinds: tuple[str, ...], owner: str) -> bool:
    changed = False
    for kind in kinds:
        path = record_path(directory, kind, owner)
        if path.exists():
            path.unlink()
            changed = True
    return changed


def has_records() -> bool:
    directory = namespace_path() / "records"
    return directory.is_dir() and any(p.suffix == ".json" for p in directory.iterdir())


def parse(path: Path) -> Record:
    """One record file, checked; BadRecord says why it cannot be used."""
    try:
        doc = json.loads(read_text(path) or "")
    except (OSError, ValueError) as exc:
        raise BadRecord(f"{path.name}: unreadable ({exc})") from None
    if not isinstance(doc, dict):
        raise BadRecord(f"{path.name}: not a record")
    fmt = doc.get("format")
    if isinstance(fmt, int) and fmt > FORMAT:
        raise BadRecord(f"{path.name}: written by a newer kvmnet (format {fmt}); left as it is")
    kind, owner, op = doc.get("kind"), doc.get("owner"), doc.get("op")
    args, result = doc.get("args"), doc.get("result", {})
    if (
        fmt != FORMAT
        or kind not in KINDS
        or not isinstance(op, str)
        or WRITES.get(op) != kind
        or not isinstance(owner, str)
        or not isinstance(args, dict)
        or args.get("owner") != owner
        or not isinstance(result, dict)
    ):
        raise BadRecord(f"{path.name}: not a record kvmnet can apply")
    return Record(kind, owner, op, args, result, path)


def load(directory: Path) -> tuple[list[Record], list[str]]:
    """The usable records in restore order, and one line for each one skipped."""
    found: list[Record] = []
    skipped: list[str] = []
    if not directory.is_dir():
        return found, skipped
    for path in sorted(directory.glob("*.json")):
        try:
            found.append(parse(path))
        except BadRecord as exc:
            skipped.append(str(exc))
    found.sort(key=lambda r: (KINDS.index(r.kind), r.path.name))
    return found, skipped
