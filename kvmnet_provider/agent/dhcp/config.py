"""dnsmasq's files for one network, as text (pure; the spec is already validated).

- ``dnsmasq.conf`` what needs a restart to change: the bridge, range, domain, paths;
- ``dhcp-hosts``  the static leases, ``MAC,ADDRESS,NAME`` (``MAC,NAME`` for a guest with no
  address: it gets one from the range and its name in DNS), and the verify probe's
  ``MAC,ADDRESS`` (spec/verify_probe.py);
- ``hosts``       DNS names of the guests with an address, ``ADDRESS NAME.DOMAIN NAME``.
The last two are re-read on SIGHUP, so a change of guests costs no restart; dnsmasq reads
them as its unprivileged user, from the directory account.py makes for them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ...spec import verify_probe
from ...spec.dhcp import LEASE_SECONDS
from ...spec.family import IPV4, Family

CONF, DHCP_HOSTS, HOSTS, LEASES, PIDFILE, LOG = (
    "dnsmasq.conf",
    "dhcp-hosts",
    "hosts",
    "leases",
    "dnsmasq.pid",
    "dnsmasq.log",
)


def conf_text(
    spec: dict[str, Any],
    run_dir: Path,
    files_dir: Path,
    user: str,
    group: str,
    family: Family = IPV4,
) -> str:
    start, end = spec["dhcp_range"]
    netmask = family.dhcp_mask(spec["subnet"])
    lines = [
        "# written by kvmnet: the DHCP/DNS server of bridge " + spec["bridge"],
        # Only the bridge: never the host's NIC, never loopback (a host resolver may hold
        # 127.0.0.1:53 or 127.0.0.53:53), and bound to its addresses so nothing clashes.
        f"interface={spec['bridge']}",
        "except-interface=lo",
        "bind-interfaces",
        # It parses packets from guests: root only to bind and open its files, then `user`.
        f"user={user}",
        f"group={group}",
        f"pid-file={run_dir / PIDFILE}",
        f"log-facility={run_dir / LOG}",
        "no-hosts",  # the host's /etc/hosts is not the guests' business
        "domain-needed",
        "bogus-priv",
        f"domain={spec['domain']}",
        f"local=/{spec['domain']}/",  # answered here, never forwarded upstream
        "expand-hosts",
        f"addn-hosts={files_dir / HOSTS}",
        f"dhcp-range={start},{end},{netmask},{LEASE_SECONDS}",
        f"dhcp-hostsfile={files_dir / DHCP_HOSTS}",
        f"dhcp-leasefile={run_dir / LEASES}",
        "dhcp-authoritative",
        f"dhcp-option=option:router,{spec['gateway']}",
        f"dhcp-option=option:dns-server,{spec['gateway']}",
        f"dhcp-option=option:domain-name,{spec['domain']}",
    ]
    return "\n".join(lines) + "\n"


def dhcp_hosts_text(spec: dict[str, Any]) -> str:
    lines = []
    for h in spec["hosts"]:
        if h["address"]:
            lines.append(f"{h['mac']},{h['address']},{h['name']}")
        else:
            lines.append(f"{h['mac']},{h['name']}")
    addresses = [h["address"] for h in spec["hosts"] if h["address"]]
    probe = verify_probe.reservation(
        spec["bridge"], spec["subnet"], spec["gateway"], addresses, spec["dhcp_range"]
    )
    if probe is not None:  # the verify probe's, nameless: offered at once, never in DNS
        lines.append(f"{probe[0]},{probe[1]}")
    return "".join(line + "\n" for line in lines)


def hosts_text(spec: dict[str, Any]) -> str:
    lines = [f"{spec['gateway']} gateway.{spec['domain']}"]
    for h in spec["hosts"]:
        if h["address"]:
            lines.append(f"{h['address']} {h['name']}.{spec['domain']} {h['name']}")
    return "".join(line + "\n" for line in lines)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def argv(binary: str, run_dir: Path) -> list[str]:
    # Every setting is in the conf file; --conf-file also keeps /etc/dnsmasq.conf out.
    return [binary, f"--conf-file={run_dir / CONF}"]


def leases(text: str | None) -> list[dict[str, Any]]:
    """The lease file's entries: `EXPIRY MAC ADDRESS HOSTNAME CLIENTID` per line."""
    found = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        found.append(
            {
                "expires": int(parts[0]),
                "mac": parts[1],
                "address": parts[2],
                "hostname": None if parts[3] == "*" else parts[3],
            }
        )
    return sorted(found, key=lambda lease: lease["address"])
