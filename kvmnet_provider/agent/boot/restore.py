"""The boot-time restore: apply every record of this network namespace again, in order.

Run by kvmnet-restore.service (see unit.py) from the code copy under /var/lib/kvmnet, or by
hand: `python3 -I /var/lib/kvmnet/netns-<inode>/agent-code/kvmnet-restore.py`. Each record
is applied with the same operation the agent ran for Pulumi, so a restore is what `up` does:
the same checks, the same owner marks, the firewall backend the record names. A record that
is corrupt, written by a newer kvmnet, or that fails to apply costs one line on stderr (the
journal) and is skipped; the others still come back. Applying the same records twice
changes nothing (every operation converges on its args).

Links come back as they were, so Pulumi's ids and outputs still hold: a bridge gets its
recorded ifindex when that is free, and bridges and taps their recorded MAC. The bridged
model's NIC is taken over with the same safe apply as `up`: the operation undoes itself when
the bridge cannot take the NIC's addresses and routes, and a take-over that leaves the
bridge without them is given back to the NIC by its armed rollback.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from typing import Any

from . import records

Handler = Callable[[dict[str, Any]], Any]
ROLLBACK_SECONDS = 20  # a boot's take-over is confirmed at once, or rolled back by then
OWN_CONFIG = "; the NIC keeps the host's own configuration"


def say(line: str) -> None:
    print(f"kvmnet-restore: {line}", file=sys.stderr, flush=True)


def apply(record: records.Record, handler: Callable[[str], Handler | None]) -> None:
    """Apply one record again; raises what its operation raised."""
    op, args = record.op, dict(record.args)
    if record.kind == "bridge":
        _precreate_bridge(record)
    if record.kind == "uplink":
        args.update(token=secrets.token_hex(16), rollback_seconds=ROLLBACK_SECONDS,
                    ifindex=record.result.get("ifindex"))  # fmt: skip
    result = _op(handler, op)(args)
    if record.kind == "uplink":
        _settle_uplink(record, result, handler)
    if record.kind in ("bridge", "tap") and isinstance(result, dict):
        _keep_mac(record, result)


def _precreate_bridge(record: records.Record) -> None:
    """Make the bridge with its recorded ifindex and MAC, marked ours, when it is absent:
    bridge.create then finds it ours and applies the rest. Best effort: a taken ifindex
    leaves the choice to bridge.create (Pulumi's id, read back by refresh, is unchanged)."""
    from ..links.netlink import iproute_class
    from ..links.state import owner_tag

    index, mac = record.result.get("ifindex"), record.result.get("mac")
    name = record.args.get("name")
    if not isinstance(index, int) or not isinstance(mac, str) or not isinstance(name, str):
        return
    with iproute_class()() as ipr:
        if ipr.link_lookup(ifname=name):
            return
        try:
            ipr.link("add", ifname=name, kind="bridge", index=index, address=mac)
        except Exception:
            return
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("set", index=found[0], ifalias=owner_tag(record.owner))


def _keep_mac(record: records.Record, result: dict[str, Any]) -> None:
    from ..links.netlink import iproute_class

    mac, index = record.result.get("mac"), result.get("ifindex")
    if not isinstance(mac, str) or not isinstance(index, int) or result.get("mac") == mac:
        return
    with iproute_class()() as ipr:
        ipr.link("set", index=index, address=mac)


def _settle_uplink(
    record: records.Record, result: Any, handler: Callable[[str], Handler | None]
) -> None:
    """Confirm a boot's take-over when the bridge holds the NIC's addresses; otherwise release
    it at once (the armed rollback would give the NIC back at its deadline all the same)."""
    token = result.get("token") if isinstance(result, dict) else None
    if token is None:
        return  # already bridged: nothing was changed, nothing is armed
    if result.get("state") == "bridged":
        _op(handler, "uplink.confirm")({"token": token})
        return
    say(f"uplink {record.args.get('nic')}: the bridge did not take its addresses "
        f"({result.get('state')}){OWN_CONFIG}")
    _op(handler, "uplink.status")({"token": token})  # the rollback runs at its deadline


def _op(handler: Callable[[str], Handler | None], op: str) -> Handler:
    run = handler(op)
    if run is None:
        raise RuntimeError(f"this agent has no operation {op}")
    return run


def restore(handler: Callable[[str], Handler | None]) -> dict[str, list[str]]:
    """Apply the records; returns the kinds:owners applied, failed and skipped."""
    found, skipped = records.load(records.namespace_dir() / "records")
    for line in skipped:
        say(f"skipped {line}")
    applied: list[str] = []
    failed: list[str] = []
    for record in found:
        args = record.args
        label = f"{record.kind} {args.get('name') or args.get('bridge') or record.owner}"
        try:
            apply(record, handler)
        except Exception as exc:  # one object's failure is that object's, never the others'
            kept = OWN_CONFIG if record.kind == "uplink" else ""  # undone, or never begun
            say(f"{label}: not restored: {exc}{kept}")
            failed.append(label)
            continue
        applied.append(label)
    return {"applied": applied, "failed": failed, "skipped": skipped}


def main() -> None:
    from .. import server

    handlers = server.build_handlers()
    outcome = restore(lambda op: server.handler_for(handlers, op))
    say(
        f"{len(outcome['applied'])} restored, {len(outcome['failed'])} failed, "
        f"{len(outcome['skipped'])} skipped"
    )
    sys.exit(1 if outcome["failed"] else 0)


if __name__ == "__main__":
    main()
