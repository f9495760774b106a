"""The bridged model's risky step: a bridge takes over the NIC the operator is logged in over.

Two configurations of one host, each idempotent to apply: plain (the NIC carries its
addresses and routes) and bridged (a bridge with the NIC's MAC carries them, the NIC is its
port). Each is applied safely: routes in an order the kernel accepts, a refusal reported
without stopping the rest. Going from one to the other first arms a rollback: a detached
process that puts the previous configuration back at its deadline unless a *new* SSH login
disarms it (the provider does); a restore stays armed until a new login has heard it. What
each owner changed is kept in the host state to put things back on delete and to read drift.
"""

from __future__ import annotations

import fcntl
import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...spec import validate
from ...spec.marks import OWNER_PREFIX
from .. import hoststate
from ..codelock import hold_code
from ..errors import AgentError
from ..links import rtdump
from ..links.netlink import add_link, iproute_class, link_addresses
from ..links.state import owner_in
from ..rundir import private_dir
from .routes import (
    apply_addresses,
    change_address,
    change_route,
    index_of,
    link_message,
    put_back,
)

ROLLBACK_SECONDS = (5, 600)
ROLLBACK_TRIES = 3  # applies of a restore no new login has heard


def _dir() -> Path:
    return private_dir(hoststate.namespace_dir() / "uplink")


@contextmanager
def _lock() -> Iterator[None]:
    with open(_dir() / "lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def inspect(args: dict[str, Any]) -> dict[str, Any]:
    """What a take-over would start from; used by `check` to refuse a bad NIC at preview."""
    IPRoute = iproute_class()

    nic = validate.ifname(args["nic"])
    with IPRoute() as ipr:
        idx = index_of(ipr, nic)
        if idx is None:
            return {"exists": False}
        msg = link_message(ipr, idx)
        master_idx = msg.get_attr("IFLA_MASTER")
        master = link_message(ipr, master_idx) if master_idx else None
        alias = (master.get_attr("IFLA_IFALIAS") or "") if master else ""
        return {
            "exists": True,
            "kind": msg.get(("linkinfo", "kind")),
            "master": master.get_attr("IFLA_IFNAME") if master else None,
            "master_owner": owner_in(alias),
            "mac": msg.get_attr("IFLA_ADDRESS"),
            "addresses": rtdump.addresses(ordered=True).get(idx, []),
            "routes": rtdump.link_routes(idx),
        }


def apply_bridged(ipr: Any, cfg: dict[str, Any]) -> list[str]:
    nic = index_of(ipr, cfg["nic"])
    if nic is None:
        raise AgentError("missing", f"NIC {cfg['nic']} does not exist")
    br = index_of(ipr, cfg["bridge"])
    if br is None:  # at the ifindex a boot's restore asks for, when free (Pulumi's id names it)
        br = add_link(ipr, cfg.get("ifindex"), ifname=cfg["bridge"], kind="bridge",
                      br_stp_state=0, br_forward_delay=0)  # fmt: skip
        ipr.link("set", index=br, ifalias=OWNER_PREFIX + cfg["owner"])
        # The NIC's MAC: DHCP reservations and neighbours' caches keep working.
        ipr.link("set", index=br, address=cfg["mac"])
        if cfg.get("mtu"):
            ipr.link("set", index=br, mtu=cfg["mtu"])
    ipr.link("set", index=nic, master=br)
    for cidr in cfg["nic_addresses"]:
        change_address(ipr, "del", nic, cidr)
    for route in cfg["routes"]:  # IPv6 routes outlive the addresses, and would clash
        change_route(ipr, "del", nic, route)
    ipr.link("set", index=br, state="up")
    ipr.link("set", index=nic, state="up")
    return put_back(ipr, br, cfg["bridge_addresses"], cfg["routes"])


def apply_plain(ipr: Any, cfg: dict[str, Any]) -> list[str]:
    nic = index_of(ipr, cfg["nic"])
    if nic is None:
        raise AgentError("missing", f"NIC {cfg['nic']} does not exist")
    br = index_of(ipr, cfg["bridge"])
    if br is not None:
        alias = link_message(ipr, br).get_attr("IFLA_IFALIAS") or ""
        if alias != OWNER_PREFIX + cfg["owner"]:
            raise AgentError("conflict", f"{cfg['bridge']} is not ours; left untouched")
        ipr.link("set", index=nic, master=0)
        ipr.link("del", index=br)  # its addresses and routes go with it
    ipr.link("set", index=nic, state="up")
    return put_back(ipr, nic, cfg["nic_addresses"], cfg["routes"])


APPLY = {"bridged": apply_bridged, "plain": apply_plain, "addresses": apply_addresses}


# --- rollback --------------------------------------------------------------------------------
def _token(value: object) -> str:
    if not isinstance(value, str) or not value.isalnum() or not 8 <= len(value) <= 64:
        raise AgentError("invalid", "token must be 8-64 letters and digits")
    return value


def arm(token: str, target: str, cfg: dict[str, Any], seconds: int) -> None:
    """Start the detached process that applies `target` at the deadline unless disarmed."""
    armed = _dir() / f"{token}.armed"
    # CLOCK_MONOTONIC is one clock for every process on the host: a clock step cannot move it.
    plan = {
        "target": target,
        "cfg": cfg,
        "seconds": seconds,
        "deadline_monotonic": time.monotonic() + seconds,
    }
    armed.write_text(json.dumps(plan))
    # The directory holding the top package (kvmnet_agent on a host, shipped as a tree): the
    # code directory whose lock the rollback holds (see hostboot.py).
    package_root = str(Path(__file__).resolve().parents[len(__package__.split("."))])
    # Isolated (-I -S, from /) with exactly the agent's path: no module from a home or working
    # directory, no .pth run as root. It holds its code's lock while it waits.
    code = (
        f"import sys; sys.path[:] = {list(sys.path)!r}; "
        f"from {__package__} import uplink; uplink.rollback_main(sys.argv[1], {package_root!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", code, str(armed)],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready or proc.stdout.readline().strip() != "ready":
        armed.unlink(missing_ok=True)
        proc.kill()
        raise AgentError("failed", "could not arm the rollback; nothing was changed")
    proc.stdout.close()


def rollback_main(armed_path: str, code_root: str | None = None) -> None:
    """Body of the rollback process: wait, then restore unless disarmed. A restore stays armed
    until a new SSH login has read its result (uplink.status): unheard, it is applied again,
    up to ROLLBACK_TRIES times in all, each with the same wait."""
    IPRoute = iproute_class()  # loaded now: the agent's files may vanish later
    _code_lock = hold_code(code_root)  # noqa: F841 -- and keep them while it waits

    armed = Path(armed_path)
    plan = json.loads(armed.read_text())
    unheard = armed.with_suffix(".unheard")
    print("ready", flush=True)
    sys.stdout.close()
    tries = 0
    while True:
        time.sleep(0.2)
        with _lock():
            if not armed.exists():
                return  # disarmed, or a login has heard the restore
            if time.monotonic() < plan["deadline_monotonic"]:
                continue
            tries += 1
            result: dict[str, Any] = {"target": plan["target"], "at": time.time(), "try": tries}
            try:
                with IPRoute() as ipr:
                    refused = APPLY[plan["target"]](ipr, plan["cfg"])
                result.update(ok=not refused, refused=refused)
            except Exception as exc:  # keep the record: the operator must know
                result.update(ok=False, error=str(exc))
            armed.with_suffix(".rolledback").write_text(json.dumps(result))
            if tries >= ROLLBACK_TRIES:
                armed.unlink()
                return
            unheard.touch()
            plan["deadline_monotonic"] = time.monotonic() + plan.get("seconds", 30)


def confirm(args: dict[str, Any]) -> dict[str, Any]:
    token = _token(args["token"])
    with _lock():
        armed = _dir() / f"{token}.armed"
        done = _dir() / f"{token}.rolledback"
        if done.exists():
            raise AgentError("failed", f"too late: the rollback already ran: {done.read_text()}")
        if not armed.exists():
            raise AgentError("invalid", "no rollback is armed with that token")
        armed.unlink()
    # A release seen to work: the record of what to undo goes now, not before.
    for books in ("uplinks", "adopted"):
        with hoststate.locked(books) as doc:
            for owner in [o for o, r in doc.items() if r.get("releasing") == token]:
                doc.pop(owner)
    return {"confirmed": True}


def rollback_status(args: dict[str, Any]) -> dict[str, Any]:
    token = _token(args["token"])
    with _lock():
        done, armed = _dir() / f"{token}.rolledback", _dir() / f"{token}.armed"
        record = json.loads(done.read_text()) if done.exists() else None
        if record is not None:  # a new login has heard the restore: it worked, stop
            done.unlink()
            armed.unlink(missing_ok=True)
            armed.with_suffix(".unheard").unlink(missing_ok=True)
        return {"armed": armed.exists(), "rolled_back": record}


# --- the operations ----------------------------------------------------------------------------
def _seconds(value: object) -> int:
    return validate.int_range(value, *ROLLBACK_SECONDS)


def _apply_or_undo(
    ipr: Any,
    target: str,
    wanted: dict[str, Any],
    previous: dict[str, Any],
    what: str,
    undo_target: str | None = None,
) -> None:
    """Apply `wanted`; if any of it fails or is refused, put `previous` back at once the same
    way. The rollback stays armed: only a new SSH login (the provider's confirm) shows the
    host reachable; without one it applies `previous` again."""
    undo = APPLY[undo_target or ("plain" if target == "bridged" else "bridged")]
    try:
        refused = APPLY[target](ipr, wanted)
        if not refused:
            return
        cause = "the kernel refused " + "; ".join(refused)
    except Exception as exc:
        cause = str(exc)
    try:
        left = undo(ipr, previous)
        undone = "undone at once" + (f" except {'; '.join(left)}" if left else "")
    except Exception as exc:
        undone = f"not undone ({exc}); the rollback retries at its deadline"
    raise AgentError("failed", f"{what} failed and was {undone}: {cause}")


def takeover(args: dict[str, Any]) -> dict[str, Any]:
    """Arm a rollback to today's plain configuration, then bridge the NIC in one step."""
    IPRoute = iproute_class()

    owner = validate.owner(args["owner"])
    bridge, nic = validate.ifname(args["bridge"]), validate.ifname(args["nic"])
    token, seconds = _token(args["token"]), _seconds(args["rollback_seconds"])
    with hoststate.locked("uplinks") as doc, IPRoute() as ipr:
        record = doc.get(owner)
        if record is None:
            live = inspect({"nic": nic})
            if not live["exists"]:
                raise AgentError("missing", f"NIC {nic} does not exist on this host")
            if live["master"]:
                raise AgentError(
                    "conflict", f"NIC {nic} is already a port of bridge {live['master']}"
                )
            if index_of(ipr, bridge) is not None:
                raise AgentError(
                    "conflict", f"{bridge} already exists; kvmnet will not take it over"
                )
            plain = {
                "owner": owner,
                "bridge": bridge,
                "nic": nic,
                "mac": live["mac"],
                "nic_addresses": live["addresses"],
                "routes": live["routes"],
            }
            record = {"plain": plain}
        plain = record["plain"]
        wanted = [validate.interface_address(a) for a in args.get("addresses") or []]
        bridged = {  # a boot's restore asks for the bridge's recorded ifindex
            **plain,
            "bridge_addresses": wanted or plain["nic_addresses"],
            "mtu": args.get("mtu"),
            "ifindex": args.get("ifindex") and validate.int_range(args["ifindex"], 1, 2**31 - 1),
        }
        plain = {**plain, "bridge_addresses": []}
        record["bridged"] = bridged
        record.pop("releasing", None)  # a release the host undid: bridged again
        arm(token, "plain", plain, seconds)
        _apply_or_undo(ipr, "bridged", bridged, plain, f"bridging {nic}")
        doc[owner] = record
    # Read once the record is saved and its lock released.
    return {"token": token, "armed_seconds": seconds, **(read({"owner": owner}) or {})}


def release(args: dict[str, Any]) -> dict[str, Any]:
    """Arm a rollback to the bridged configuration, then give the NIC its addresses back."""
    IPRoute = iproute_class()

    owner = validate.owner(args["owner"])
    token, seconds = _token(args["token"]), _seconds(args["rollback_seconds"])
    with hoststate.locked("uplinks") as doc, IPRoute() as ipr:
        record = doc.get(owner)
        if record is None:
            return {"token": None, "released": False}
        arm(token, "bridged", record["bridged"], seconds)
        plain = {**record["plain"], "bridge_addresses": []}
        _apply_or_undo(ipr, "plain", plain, record["bridged"], "un-bridging")
        record["releasing"] = token  # dropped at the confirm: until then the undo needs it
    return {"token": token, "released": True}


def forget(args: dict[str, Any]) -> dict[str, Any]:
    """Drop the record of a take-over that was rolled back (nothing on the host is ours)."""
    owner = validate.owner(args["owner"])
    with hoststate.locked("uplinks") as doc:
        return {"forgotten": doc.pop(owner, None) is not None}


def read(args: dict[str, Any]) -> dict[str, Any] | None:
    IPRoute = iproute_class()

    owner = validate.owner(args["owner"])
    with hoststate.locked("uplinks") as doc:
        record = doc.get(owner)
    if record is None:
        return None
    bridged = record["bridged"]
    with IPRoute() as ipr:
        br, nic = index_of(ipr, bridged["bridge"]), index_of(ipr, bridged["nic"])
        if (
            br is None
            or (link_message(ipr, br).get_attr("IFLA_IFALIAS") or "") != OWNER_PREFIX + owner
        ):
            return None
        enslaved = nic is not None and link_message(ipr, nic).get_attr("IFLA_MASTER") == br
        bridge_addresses = link_addresses(ipr, br)
        nic_addresses = link_addresses(ipr, nic) if nic is not None else []
        mac = link_message(ipr, br).get_attr("IFLA_ADDRESS")
    if not enslaved:
        state = "nic-not-a-port"
    elif set(bridged["nic_addresses"]) & set(nic_addresses):
        state = "address-back-on-nic"
    elif sorted(bridged["bridge_addresses"]) != bridge_addresses:
        state = "bridge-addresses-differ"
    else:
        state = "bridged"
    return {
        "state": state,
        "bridge": bridged["bridge"],
        "nic": bridged["nic"],
        "mac": mac,
        "ifindex": br,  # a bridge made anew has another (the provider's id names it)
        "addresses": bridge_addresses,
        "nic_addresses": nic_addresses,
        "moved_routes": bridged["routes"],
        "previous_addresses": record["plain"]["nic_addresses"],
    }


def handlers() -> dict[str, Any]:
    return {
        "uplink.inspect": inspect,
        "uplink.takeover": takeover,
        "uplink.release": release,
        "uplink.confirm": confirm,
        "uplink.status": rollback_status,
        "uplink.read": read,
        "uplink.forget": forget,
    }
