"""guest.probe: one quick look at a guest, for the provider that waits for it to be ready.

The provider polls (one short request every second or two) rather than having the agent wait:
a wait held on the agent would hold the guest's worker, and a guest that never gets ready
would hold it for its whole timeout. What one probe reports:

- the guest's IPv4 addresses: its reservations (the ``MAC,ADDRESS,NAME`` lines of the
  dnsmasq hosts files on this host) and its live leases (dnsmasq's lease files), by MAC;
- whether it holds a lease, whether a TCP port answers on its address (a connect from the
  host's namespace), whether a pattern is in its console log, and the log's last line.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

from ...spec import validate
from ...spec.guest import guest_name
from ...spec.ready import pattern
from .. import hoststate, rundir
from ..dhcp import account, config
from .process import live_pid
from .rundir import guests_root, load_meta

CONNECT_TIMEOUT = 1.0
CONSOLE_TAIL = 4 * 1024 * 1024  # enough for a boot's log; a pattern printed earlier is lost
LAST_LINE_MAX = 200
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def probe(args: dict[str, Any]) -> dict[str, Any]:
    name, owner = guest_name(args["name"]), validate.owner(args["owner"])
    tcp = None if args.get("tcp") is None else validate.port(args["tcp"])
    wanted = None if args.get("console") is None else pattern(args["console"])
    address = None if args.get("address") is None else validate.ipv4_address(args["address"])
    run_dir = guests_root() / name
    meta = load_meta(run_dir)  # read only: no lock, a start or stop in progress shows as gone
    if meta is None or meta.get("owner") != owner or live_pid(run_dir, name, meta) is None:
        return {"running": False, "addresses": [], "leased": [], "last_line": ""}
    macs = {str(n["mac"]).lower() for n in meta.get("nics") or []}
    reserved, leased = reservations(macs), leases(macs)
    addresses = sorted({*([address] if address else []), *reserved, *leased}, key=_key)
    log = Path(str(meta.get("console_log") or run_dir / "console.log"))
    text = _console_text(log)
    answer: dict[str, Any] = {
        "running": True,
        "addresses": addresses,
        "leased": leased,
        "last_line": last_line(text),
    }
    if tcp is not None:
        target = address or next(iter(reserved), None) or next(iter(leased), None)
        answer["tcp"] = target is not None and answers(target, tcp)
        answer["tcp_address"] = target
    if wanted is not None:
        answer["console"] = re.search(wanted, text, re.MULTILINE) is not None
    return answer


def _key(address: str) -> tuple[int, ...]:
    return tuple(int(p) for p in address.split("."))


def _dhcp_dirs() -> list[Path]:
    root = hoststate.namespace_dir() / "dhcp"
    try:
        return sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []


def reservations(macs: set[str]) -> list[str]:
    """The static leases for these MACs in every network's dnsmasq hosts file here."""
    found = []
    for run_dir in _dhcp_dirs():
        text = rundir.read_text(account.files_dir(run_dir.name) / config.DHCP_HOSTS) or ""
        for line in text.splitlines():
            parts = line.strip().split(",")
            if len(parts) >= 3 and parts[0].lower() in macs:
                found.append(parts[1])
    return sorted(set(found), key=_key)


def leases(macs: set[str], now: float | None = None) -> list[str]:
    """The live leases (unexpired; 0 is forever) for these MACs in every lease file here."""
    now = time.time() if now is None else now
    found = []
    for run_dir in _dhcp_dirs():
        for lease in config.leases(rundir.read_text(run_dir / config.LEASES)):
            expires = lease["expires"]
            if lease["mac"].lower() in macs and (expires == 0 or expires > now):
                found.append(lease["address"])
    return sorted(set(found), key=_key)


def answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def _console_text(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - CONSOLE_TAIL))
            data = f.read()
    except OSError:
        return ""
    return data.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def last_line(text: str) -> str:
    """The console's last line with something in it, without terminal escapes."""
    for line in reversed(text[-65536:].split("\n")):
        clean = _CONTROL.sub("", line).strip()
        if clean:
            return clean[:LAST_LINE_MAX]
    return ""
