"""Bridges and taps, driven over netlink with pyroute2.

Ownership lives on the host: a link we create carries the ifalias "kvmnet:<owner>", so
another stack's link, or one made by hand, is reported instead of silently adopted.
"""

from __future__ import annotations

import ipaddress
import pwd
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import validate
from .errors import AgentError

OWNER_PREFIX = "kvmnet:"
USER_HZ = 100  # IFLA_BR_FORWARD_DELAY is in clock ticks


def owner_tag(owner: str) -> str:
    return OWNER_PREFIX + owner


class Links:
    """Idempotent create/read/update/delete of kvmnet's links on one host."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr

    # --- reading -------------------------------------------------------------------------
    def index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def _msg(self, name: str) -> Any | None:
        idx = self.index(name)
        if idx is None:
            return None
        try:
            return self.ipr.get_links(idx)[0]
        except NetlinkError:
            return None

    def _addresses(self, idx: int) -> list[str]:
        out = []
        for msg in self.ipr.get_addr(index=idx):
            addr = msg.get("IFA_ADDRESS")
            iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
            if iface.version == 6 and iface.ip.is_link_local:
                continue  # the kernel adds these by itself
            out.append(str(iface))
        return sorted(out)

    def read(self, name: str) -> dict[str, Any] | None:
        """The live state of a link, or None when it does not exist."""
        msg = self._msg(validate.ifname(name))
        if msg is None:
            return None
        idx = msg["index"]
        kind = msg.get(("linkinfo", "kind"))
        master_idx = msg.get("IFLA_MASTER")
        master = None
        if master_idx:
            master_msg = self.ipr.get_links(master_idx)[0]
            master = master_msg.get("IFLA_IFNAME")
        alias = msg.get("IFLA_IFALIAS") or ""
        state: dict[str, Any] = {
            "name": name,
            "ifindex": idx,
            "kind": kind,
            "mac": msg.get("IFLA_ADDRESS"),
            "mtu": msg.get("IFLA_MTU"),
            "up": bool(msg["flags"] & 1),
            "master": master,
            "owner": alias[len(OWNER_PREFIX) :] if alias.startswith(OWNER_PREFIX) else None,
            "alias": alias,
            "addresses": self._addresses(idx),
        }
        if kind == "bridge":
            stp = msg.get(("linkinfo", "data", "IFLA_BR_STP_STATE"))
            delay = msg.get(("linkinfo", "data", "IFLA_BR_FORWARD_DELAY"))
            state["stp"] = bool(stp)
            state["forward_delay"] = int(round((delay or 0) / USER_HZ))
        if kind == "tun":
            uid = msg.get(("linkinfo", "data", "IFLA_TUN_OWNER"))
            state["multi_queue"] = bool(msg.get(("linkinfo", "data", "IFLA_TUN_MULTI_QUEUE")))
            state["tun_type"] = msg.get(("linkinfo", "data", "IFLA_TUN_TYPE"))
            state["owner_user"] = _user_name(uid)
        return state

    # --- ownership -----------------------------------------------------------------------
    def _claim(self, name: str, owner: str, adopt: bool, kind: str) -> dict[str, Any] | None:
        """Existing link that we may manage, None when absent; conflict otherwise."""
        live = self.read(name)
        if live is None:
            return None
        if live["owner"] == owner:
            return live
        if live["kind"] != kind:
            raise AgentError(
                "conflict", f"{name} exists and is a {live['kind'] or 'plain'} link, not a {kind}"
            )
        if adopt and live["owner"] is None:
            self.ipr.link("set", index=live["ifindex"], ifalias=owner_tag(owner))
            return self.read(name)
        holder = f"kvmnet resource {live['owner']}" if live["owner"] else "something outside kvmnet"
        raise AgentError(
            "conflict",
            f"{name} already exists and belongs to {holder}; kvmnet will not take it over"
            + ("" if live["owner"] else " (set adopt=true to manage it)"),
        )

    def _require_ours(self, name: str, owner: str) -> dict[str, Any] | None:
        live = self.read(name)
        if live is not None and live["owner"] != owner:
            holder = live["owner"] or "nobody (no kvmnet mark)"
            raise AgentError(
                "conflict", f"{name} is not ours (it belongs to {holder}); left untouched"
            )
        return live

    # --- bridges -------------------------------------------------------------------------
    def _create(
        self,
        spec: dict[str, Any],
        kind: str,
        add: Callable[[str], object],
        apply: Callable[[dict[str, Any], dict[str, Any]], None],
    ) -> dict[str, Any]:
        """Create the link when absent, marked as ours, then make it match `spec`. All or
        nothing: a failure removes what this call created."""
        name, owner = validate.ifname(spec["name"]), validate.owner(spec["owner"])
        live = self._claim(name, owner, bool(spec.get("adopt")), kind)
        created: int | None = None
        try:
            if live is None:
                add(name)
                created = self._wait_index(name)
                self.ipr.link("set", index=created, ifalias=owner_tag(owner))
                live = {"ifindex": created, "addresses": [], "master": None, "created": True}
            apply(spec, live)
        except Exception:
            if created is not None:
                _quietly(lambda: self.ipr.link("del", index=created))
            raise
        return self._must_read(name)

    def bridge_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        def add(name: str) -> None:
            self.ipr.link(
                "add",
                ifname=name,
                kind="bridge",
                br_stp_state=1 if spec["stp"] else 0,
                br_forward_delay=int(spec["forward_delay"]) * USER_HZ,
            )

        def apply(spec: dict[str, Any], live: dict[str, Any]) -> None:
            if live.get("created"):
                # Pin the MAC the kernel gave it: otherwise a bridge takes the lowest MAC of
                # its ports, so its MAC (the guests' gateway) changes as taps come and go.
                mac = self.ipr.get_links(live["ifindex"])[0].get("IFLA_ADDRESS")
                self.ipr.link("set", index=live["ifindex"], address=mac)
            self._bridge_apply(spec, live)

        return self._create(spec, "bridge", add, apply)

    def bridge_update(self, spec: dict[str, Any]) -> dict[str, Any]:
        name, owner = validate.ifname(spec["name"]), validate.owner(spec["owner"])
        live = self._require_ours(name, owner)
        if live is None:
            raise AgentError("missing", f"bridge {name} does not exist")
        self._bridge_apply(spec, live)
        return self._must_read(name)

    def _bridge_apply(self, spec: dict[str, Any], live: dict[str, Any]) -> None:
        """Make the bridge `live` (as last read) match `spec`; no reads of its own."""
        idx = live["ifindex"]
        stp = 1 if spec["stp"] else 0
        delay = int(spec["forward_delay"]) * USER_HZ
        # The kernel checks the delay against the STP state in force: order the two.
        if stp:
            self.ipr.link("set", index=idx, kind="bridge", br_stp_state=stp)
            self.ipr.link("set", index=idx, kind="bridge", br_forward_delay=delay)
        else:
            self.ipr.link("set", index=idx, kind="bridge", br_forward_delay=delay)
            self.ipr.link("set", index=idx, kind="bridge", br_stp_state=stp)
        if spec.get("mtu"):
            self.ipr.link("set", index=idx, mtu=validate.mtu(spec["mtu"]))
        self._set_addresses(
            idx,
            [validate.interface_address(a) for a in spec.get("addresses", [])],
            live["addresses"],
        )
        self.ipr.link("set", index=idx, state="up" if spec.get("up", True) else "down")

    def _set_addresses(self, idx: int, want: list[str], have: list[str]) -> None:
        for addr in sorted(set(have) - set(want)):
            iface = ipaddress.ip_interface(addr)
            self.ipr.addr(
                "del", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen
            )
        for addr in sorted(set(want) - set(have)):
            iface = ipaddress.ip_interface(addr)
            self.ipr.addr(
                "add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen
            )

    def link_delete(self, name: str, owner: str) -> dict[str, Any]:
        live = self._require_ours(validate.ifname(name), validate.owner(owner))
        if live is not None:
            self.ipr.link("del", index=live["ifindex"])
        return {"deleted": live is not None}

    # --- taps ----------------------------------------------------------------------------
    def tap_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        def add(name: str) -> None:
            flags = {
                "no_pi": 1,
                "one_queue": 0,
                "vnet_hdr": 1,
                "tun_excl": 0,
                "multi_queue": 1 if spec.get("multi_queue") else 0,
                "persist": 1,
                "nofilter": 0,
            }
            kwargs: dict[str, Any] = {"ifname": name, "kind": "tuntap", "mode": "tap", "ifr": flags}
            uid = _uid(spec.get("owner_user"))
            if uid is not None:
                kwargs["uid"] = uid
            self.ipr.link("add", **kwargs)

        return self._create(spec, "tun", add, self._tap_apply)

    def tap_update(self, spec: dict[str, Any]) -> dict[str, Any]:
        name, owner = validate.ifname(spec["name"]), validate.owner(spec["owner"])
        live = self._require_ours(name, owner)
        if live is None:
            raise AgentError("missing", f"tap {name} does not exist")
        self._tap_apply(spec, live)
        return self._must_read(name)

    def _tap_apply(self, spec: dict[str, Any], live: dict[str, Any]) -> None:
        """Make the tap `live` (as last read) match `spec`; no reads of its own."""
        name = spec["name"]
        idx = live["ifindex"]
        bridge = validate.ifname(spec["bridge"])
        bridge_idx = self.index(bridge)
        if bridge_idx is None:
            raise AgentError(
                "missing", f"bridge {bridge} for tap {name} does not exist on this host"
            )
        if spec.get("mtu"):
            self.ipr.link("set", index=idx, mtu=validate.mtu(spec["mtu"]))
        if live["master"] != bridge:
            self.ipr.link("set", index=idx, master=bridge_idx)
        self.ipr.link("set", index=idx, state="up" if spec.get("up", True) else "down")

    # --- helpers -------------------------------------------------------------------------
    def _wait_index(self, name: str) -> int:
        idx = self.index(name)
        if idx is None:
            raise AgentError("failed", f"the kernel did not create {name}")
        return idx

    def _must_read(self, name: str) -> dict[str, Any]:
        live = self.read(name)
        if live is None:
            raise AgentError("failed", f"{name} vanished while being configured")
        return live


def _uid(user: object) -> int | None:
    if user in (None, ""):
        return None
    try:
        return pwd.getpwnam(validate.user_name(user)).pw_uid
    except KeyError:
        raise AgentError("invalid", f"owner user {user!r} does not exist on this host") from None


def _user_name(uid: int | None) -> str | None:
    if uid is None or uid == 0xFFFFFFFF:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _quietly(step: Callable[[], object]) -> None:
    try:
        step()
    except (NetlinkError, OSError):
        pass
