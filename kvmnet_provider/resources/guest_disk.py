"""What an edit of a QemuGuest does to its disk, said before it happens: a smaller size is
refused at preview, and a replacement that deletes (or keeps) the overlay says so."""

from __future__ import annotations

from typing import Any

# These make another disk: the overlay is made from the base, under the guest's name.
NEW_DISK = ("name", "owner", "base_image", "base_format")


def shrunk_disk(olds: dict[str, Any], news: dict[str, Any]) -> str | None:
    """Why disk_size_gib cannot change as asked (an overlay only grows), or None."""
    if not olds or not news.get("base_image"):
        return None
    if any(olds.get(k) != news.get(k) for k in NEW_DISK):
        return None  # a new disk: any size the base allows
    old, asked = _number(olds.get("disk_size_gib")), news.get("disk_size_gib")
    new = _number(asked)
    if old is None or (asked is not None and new is None):
        return None  # never grown, or not known yet
    if new is None:
        return (
            f"disk_size_gib cannot be unset: guest {news.get('name')}'s disk was grown to "
            f"{old} GiB and a disk only grows; keep disk_size_gib {old} or more"
        )
    if new < old:
        return (
            f"disk_size_gib {new} is smaller than the {old} GiB guest {news.get('name')}'s disk "
            f"has, and a disk only grows; keep disk_size_gib {old} or more (a new base_image "
            "starts a new disk)"
        )
    return None


def _number(value: Any) -> int | None:
    """A whole number as the engine gives it (state holds numbers as floats), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not float(value).is_integer():
        return None
    return int(value)


def replace_warning(olds: dict[str, Any], news: dict[str, Any], replaces: list[str]) -> str | None:
    """What replacing the guest does to its overlay, for preview; None when it has none."""
    disk = olds.get("disk_path")
    if not isinstance(disk, str) or not disk:
        return None
    name = olds.get("name")
    host = (olds.get("connection") or {}).get("host")
    why = ", ".join(replaces)
    if olds.get("keep_disk"):
        said = f"guest {name}: replacing it ({why}) keeps its disk {host}:{disk} (keep_disk)"
        if any(olds.get(k) != news.get(k) for k in ("base_image", "base_format")):
            said += (
                "; the new guest starts on a new overlay from the new base, and the kept one "
                "is moved to kept-<UTC time>.qcow2 beside it"
            )
        return said
    said = f"guest {name}: replacing it ({why}) DELETES its disk {host}:{disk}"
    if news.get("keep_disk") is True:
        return said + (
            "; keep_disk applies from the next delete on, not to this replacement: set "
            "keep_disk alone, run up, then make this change"
        )
    return said + "; to keep it, set keep_disk: true and run up before this change"
