"""Bridges and taps, changed with rtnetlink requests of our own (rtwrite.py) and read back
from the kernel's answers decoded by rtdump.py.

Ownership lives on the host: a link we create carries the ifalias "kvmnet:<owner>", so
another stack's link, or one made by hand, is reported instead of silently adopted.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import pwd
import secrets
from collections.abc import Callable
from typing import Any

from ...spec import validate
from .. import ssh_session
from ..errors import AgentError, held_fix
from . import adoption, overlap, rtdump
from .rtdump import LinkRecord
from .rtwrite import NetlinkError, Rtnl
from .state import USER_HZ, describe, owner_in, owner_tag


class Links:
    """Idempotent create/read/update/delete of kvmnet's links on one host."""

    def __init__(self, ipr: Rtnl) -> None:
        self.ipr = ipr

    # --- reading -------------------------------------------------------------------------
    # One RTM_GETLINK by name answers "does it exist" and "what is it". rtdump asks and
    # decodes only what kvmnet reads, where pyroute2 parses the whole message, and a tap
    # create looks up three links.
    def _get(self, name: str) -> LinkRecord | None:
        return rtdump.link(name)

    def index(self, name: str) -> int | None:
        link = self._get(name)
        return None if link is None else link.index

    def read(self, name: str) -> dict[str, Any] | None:
        """The live state of a link, or None when it does not exist."""
        link = self._get(validate.ifname(name))
        return None if link is None else self._describe(link)

    def _describe(
        self, link: LinkRecord, master: str | None = None, addresses: list[str] | None = None
    ) -> dict[str, Any]:
        """A link's state. `master` (the master's name) and `addresses`, given by a caller
        that has just set them, save a round trip each."""
        if link.master and master is None:
            found = rtdump.link(index=link.master)
            master = None if found is None else found.name
        if addresses is None:
            addresses = rtdump.addresses().get(link.index, [])
        return describe(link, master, addresses)

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
            link = self._get(name)
            if link is not None:  # what it had, for the release to give back
                adoption.remember(owner, link)
            self.ipr.link("set", index=live["ifindex"], ifalias=owner_tag(owner))
            return self.read(name)
        if live["owner"]:
            fix = held_fix(live["owner"], owner, "name")
            if kind == "tun":  # a stack-config guest's default tap is its name's
                fix += " (a stack-config guest's tap is made from its name unless it sets tap)"
            raise AgentError(
                "conflict",
                f"{name} already exists and belongs to kvmnet resource {live['owner']}; "
                f"kvmnet will not take it over: {fix}",
            )
        raise AgentError(
            "conflict",
            f"{name} already exists and belongs to something outside kvmnet; kvmnet will not "
            "take it over (set adopt=true to manage it)",
        )

    def _ours(self, name: str, owner: str) -> LinkRecord | None:
        """The link when it is ours, None when absent; conflict otherwise."""
        link = self._get(name)
        if link is not None and link.alias != owner_tag(owner):
            holder = owner_in(link.alias) or "nobody (no kvmnet mark)"
            raise AgentError(
                "conflict", f"{name} is not ours (it belongs to {holder}); left untouched"
            )
        return link

    def _require_ours(self, name: str, owner: str) -> dict[str, Any] | None:
        link = self._ours(name, owner)
        return None if link is None else self._describe(link)

    # --- creating ------------------------------------------------------------------------
    def _create(
        self,
        spec: dict[str, Any],
        kind: str,
        add: Callable[[str], object],
        apply: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        """Create the link when absent, then make it match `spec` (marking it ours). All or
        nothing: a failure removes what this call created."""
        name, owner = validate.ifname(spec["name"]), validate.owner(spec["owner"])
        live = self._claim(name, owner, bool(spec.get("adopt")), kind)
        created: int | None = None
        try:
            if live is None:
                add(name)
                link = self._get(name)
                if link is None:
                    raise AgentError("failed", f"the kernel did not create {name}")
                created = link.index
                live = self._describe(link, addresses=[])  # new: no addresses of ours yet
                live["created"] = True
            return apply(spec, live)
        except Exception:
            if created is not None:
                _quietly(lambda: self.ipr.link("del", index=created))
            raise

    def _update(
        self,
        spec: dict[str, Any],
        what: str,
        apply: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        name, owner = validate.ifname(spec["name"]), validate.owner(spec["owner"])
        live = self._require_ours(name, owner)
        if live is None:
            raise AgentError("missing", f"{what} {name} does not exist")
        return apply(spec, live)

    @staticmethod
    def _mtu_and_state(spec: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        """The RTM_SETLINK fields that bring the link's MTU and up/down state to `spec`."""
        changes: dict[str, Any] = {}
        if spec.get("mtu") and validate.mtu(spec["mtu"]) != live.get("mtu"):
            changes["mtu"] = validate.mtu(spec["mtu"])
        if bool(spec.get("up", True)) != live.get("up"):
            changes["state"] = "up" if spec.get("up", True) else "down"
        return changes

    def _settle(
        self, live: dict[str, Any], owner: str, changes: dict[str, Any], **known: Any
    ) -> dict[str, Any]:
        """Apply `changes` (and our mark, on a link just created) in ONE RTM_SETLINK, then
        read the result back."""
        if live.get("created"):
            changes["ifalias"] = owner_tag(owner)
        if changes:
            self.ipr.link("set", index=live["ifindex"], **changes)
        link = rtdump.link(index=live["ifindex"])
        if link is None:
            raise AgentError("failed", f"{live['name']} went away while it was being set up")
        return self._describe(link, **known)

    # --- bridges -------------------------------------------------------------------------
    def bridge_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._refuse_capture(spec)

        def add(name: str) -> None:
            # The MAC is given, not left to the kernel: otherwise a bridge takes the lowest
            # MAC of its ports, and its MAC (the guests' gateway) changes as taps come and go.
            # Derived from the owner: a bridge made again is the same gateway to the guests.
            self.ipr.link(
                "add",
                ifname=name,
                kind="bridge",
                address=owner_mac(spec["owner"]),
                br_stp_state=1 if spec["stp"] else 0,
                br_forward_delay=int(spec["forward_delay"]) * USER_HZ,
            )

        return self._create(spec, "bridge", add, self._bridge_apply)

    def bridge_update(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._refuse_capture(spec)
        return self._update(spec, "bridge", self._bridge_apply)

    def _refuse_capture(self, spec: dict[str, Any]) -> None:
        refuse_capture(spec)

    def _bridge_apply(self, spec: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        """Make the bridge `live` (as last read) match `spec`."""
        idx = live["ifindex"]
        stp = 1 if spec["stp"] else 0
        delay = int(spec["forward_delay"]) * USER_HZ
        if not live.get("created") and (
            bool(stp) != live.get("stp") or spec["forward_delay"] != live.get("forward_delay")
        ):
            # The kernel checks the delay against the STP state in force: order the two.
            if stp:
                self.ipr.link("set", index=idx, kind="bridge", br_stp_state=stp)
                self.ipr.link("set", index=idx, kind="bridge", br_forward_delay=delay)
            else:
                self.ipr.link("set", index=idx, kind="bridge", br_forward_delay=delay)
                self.ipr.link("set", index=idx, kind="bridge", br_stp_state=stp)
        owner = validate.owner(spec["owner"])
        known: dict[str, Any] = {}
        # An adopted bridge's addresses change only under the rollback (adopted.readdress);
        # None: not given, the bridge keeps the addresses it has.
        adopted = not live.get("created") and adoption.adopted(owner)
        if spec.get("addresses") is not None and not adopted:
            want = sorted(validate.bridge_address(a) for a in spec["addresses"])
            self._set_addresses(idx, want, live["addresses"])
            known = {"addresses": want} if live.get("created") else {}
        elif live.get("created"):
            known = {"addresses": []}
        changes = self._mtu_and_state(spec, live)
        return {**self._settle(live, owner, changes, **known), "adopted": adopted}

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
        link = self._ours(validate.ifname(name), validate.owner(owner))
        if link is not None:
            self.ipr.link("del", index=link.index)
        return {"deleted": link is not None}

    def link_delete_many(self, items: list[dict[str, Any]]) -> list[Any]:
        """Several link deletes (items of name and owner), each checked as link_delete does,
        then unregistered together: the kernel's cost of a delete is mostly waiting for RCU
        grace periods, and one batch waits once, not once per link. Per item:
        link_delete's answer, or the exception raised for it."""
        results: list[Any] = []
        doomed: dict[int, int] = {}  # ifindex -> position in items
        for item in items:
            try:
                link = self._ours(validate.ifname(item["name"]), validate.owner(item["owner"]))
            except Exception as exc:
                results.append(exc)
                continue
            if link is not None:
                doomed[link.index] = len(results)
            results.append({"deleted": link is not None})
        for idx, error in self._delete_together(list(doomed)).items():
            results[doomed[idx]] = error
        return results

    def _delete_together(self, indexes: list[int]) -> dict[int, Exception]:
        """Delete the links in one RTM_DELLINK of a link group made for the purpose, each
        link alone when that fails. Returns the errors, by ifindex."""
        left = indexes
        if len(indexes) > 1:
            # A group number nothing else uses: random in 2^20..2^31 (people number groups
            # from 1). Only the links just checked as ours are put in it.
            group = secrets.randbelow(2**31 - 2**20) + 2**20
            try:
                for idx in indexes:
                    self.ipr.link("set", index=idx, group=group)
                self.ipr.link("del", group=group)
                left = []
            except NetlinkError:
                pass  # what is left is deleted one by one
        errors: dict[int, Exception] = {}
        for idx in left:
            try:
                self.ipr.link("del", index=idx)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    errors[idx] = exc
        return errors

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
        return self._update(spec, "tap", self._tap_apply)

    def _tap_apply(self, spec: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        """Make the tap `live` (as last read) match `spec`."""
        name = spec["name"]
        bridge = validate.ifname(spec["bridge"])
        bridge_idx = self.index(bridge)
        if bridge_idx is None:
            raise AgentError(
                "missing", f"bridge {bridge} for tap {name} does not exist on this host"
            )
        changes = self._mtu_and_state(spec, live)
        if live["master"] != bridge:
            changes["master"] = bridge_idx
        known = {"master": bridge, "addresses": []} if live.get("created") else {}
        state = self._settle(live, validate.owner(spec["owner"]), changes, **known)
        if state["master"] != bridge:  # `known` named it: make sure the kernel agrees
            raise AgentError("failed", f"tap {name} did not join bridge {bridge}")
        return state


def refuse_capture(spec: dict[str, Any]) -> None:
    """Before anything changes: refuse an address whose network would take traffic from the
    host (overlap.py), checked against one reading of its links, addresses and routes. The
    bridge's own addresses, and the networks it already carries, do not count."""
    want = {validate.bridge_address(a) for a in spec.get("addresses") or []}
    if not want:
        return
    host = overlap.read_host()
    name = validate.ifname(spec["name"])
    mine = next((i for i, link in host.links.items() if link.name == name), None)
    have = host.addresses.get(mine or 0, [])
    carried = {ipaddress.ip_interface(a).network for a in have}
    added = sorted(a for a in want - set(have) if ipaddress.ip_interface(a).network not in carried)
    problem = overlap.clash(added, mine, host, ssh_session.session_peers())
    if problem:
        raise AgentError("conflict", problem)


def _uid(user: object) -> int | None:
    if user in (None, ""):
        return None
    try:
        return pwd.getpwnam(validate.user_name(user)).pw_uid
    except KeyError:
        raise AgentError("invalid", f"owner user {user!r} does not exist on this host") from None


def owner_mac(owner: str) -> str:
    """A locally administered unicast MAC that only the owner decides (as libvirt keeps one
    per network): the guests' neighbour entries stay right when the bridge is made again."""
    octets = bytearray(hashlib.sha256(f"kvmnet-bridge:{owner}".encode()).digest()[:6])
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def _quietly(step: Callable[[], object]) -> None:
    try:
        step()
    except (NetlinkError, OSError):
        pass
