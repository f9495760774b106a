"""A bridge kvmnet adopted may carry the address the operator's SSH session arrives on. So
its addresses change only under the uplink's rollback (uplink.arm): a change of them
(`adopted.readdress`), and the release that gives it back what it had before the adoption
(`adopted.release`), each arm a restore of the addresses and routes it has now, which a new
SSH login disarms (uplink.confirm). What it had is recorded at the adoption
(links/adoption.py)."""

from __future__ import annotations

from typing import Any

from ...spec import validate
from .. import hoststate
from ..errors import AgentError
from ..links import adoption, rtdump
from ..links.bridges import Links, refuse_capture
from ..links.netlink import iproute_class
from ..links.rtwrite import Rtnl
from ..links.state import USER_HZ, owner_tag
from . import uplink
from .routes import index_of, link_message

TARGET = "addresses"  # uplink.APPLY's restore of one link's addresses and routes


def _ours(ipr: Any, name: str, owner: str) -> int | None:
    """The adopted bridge's ifindex while it carries our mark; None when gone or not ours."""
    idx = index_of(ipr, name)
    if idx is None or (link_message(ipr, idx).get_attr("IFLA_IFALIAS") or "") != owner_tag(owner):
        return None
    return idx


def _now(name: str, idx: int) -> dict[str, Any]:
    return {
        "link": name,
        "addresses": rtdump.addresses(ordered=True).get(idx, []),
        "routes": rtdump.link_routes(idx),
    }


def readdress(args: dict[str, Any]) -> dict[str, Any]:
    """Give an adopted bridge exactly `addresses`, its routes kept, under an armed rollback.
    {"token": None} when it has them already (nothing armed)."""
    owner, name = validate.owner(args["owner"]), validate.ifname(args["name"])
    want = sorted(validate.bridge_address(a) for a in args["addresses"])
    token, seconds = uplink._token(args["token"]), uplink._seconds(args["rollback_seconds"])
    refuse_capture({"name": name, "addresses": want})
    with hoststate.locked(adoption.DOC) as doc, iproute_class()() as ipr:
        if owner not in doc:
            raise AgentError("invalid", f"{name} is not a bridge this resource adopted")
        idx = _ours(ipr, name, owner)
        if idx is None:
            raise AgentError("missing", f"adopted bridge {name} is gone or no longer ours")
        now = _now(name, idx)
        if sorted(now["addresses"]) == want:
            return {"token": None}
        uplink.arm(token, TARGET, now, seconds)
        wanted = {**now, "addresses": want}
        what = f"changing the addresses of adopted bridge {name}"
        uplink._apply_or_undo(ipr, TARGET, wanted, now, what, TARGET)
    return {"token": token, "armed_seconds": seconds}


def release(args: dict[str, Any]) -> dict[str, Any]:
    """Give an adopted bridge back what it had before: settings at once, then addresses and
    routes under an armed rollback when they differ. The record goes at once, or at the
    confirm of a release that was armed. A bridge this owner made, not adopted, is deleted."""
    owner, name = validate.owner(args["owner"]), validate.ifname(args["name"])
    with hoststate.locked(adoption.DOC) as doc, iproute_class()() as ipr:
        record = doc.get(owner)
        if record is None:
            return {"token": None, **Links(Rtnl()).link_delete(name, owner)}
        idx = _ours(ipr, name, owner)
        if idx is None:  # deleted by hand, or taken by someone else: nothing to give back
            doc.pop(owner)
            return {"token": None, "released": False}
        before = record["before"]
        _settings_back(ipr, idx, before)
        now = {**_now(name, idx), "alias": owner_tag(owner)}
        back = {"link": name, "addresses": before["addresses"], "routes": before["routes"],
                "alias": before["alias"]}  # fmt: skip
        if sorted(now["addresses"]) == sorted(back["addresses"]):
            ipr.link("set", index=idx, ifalias=before["alias"])
            doc.pop(owner)
            return {"token": None, "released": True}
        token, seconds = uplink._token(args["token"]), uplink._seconds(args["rollback_seconds"])
        uplink.arm(token, TARGET, now, seconds)
        uplink._apply_or_undo(ipr, TARGET, back, now, f"giving {name} its addresses back", TARGET)
        record["releasing"] = token  # dropped at the confirm: until then the undo needs it
    return {"token": token, "released": True, "armed_seconds": seconds}


def _settings_back(ipr: Any, idx: int, before: dict[str, Any]) -> None:
    """MTU, STP, forward delay and up/down as they were: none of them moves an address."""
    if before.get("mtu"):
        ipr.link("set", index=idx, mtu=before["mtu"])
    delay = int(before.get("forward_delay") or 0) * USER_HZ
    stp = 1 if before.get("stp") else 0
    # The kernel checks the delay against the STP state in force: order the two.
    steps = [{"br_stp_state": stp}, {"br_forward_delay": delay}]
    for step in steps if stp else steps[::-1]:
        ipr.link("set", index=idx, kind="bridge", **step)
    ipr.link("set", index=idx, state="up" if before.get("up", True) else "down")


def handlers() -> dict[str, Any]:
    return {"adopted.readdress": readdress, "adopted.release": release}
