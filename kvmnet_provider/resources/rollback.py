"""A change that may cut the host off, applied under the host's rollback (agent/uplink).

The agent arms a restore, then changes the host; the provider proves the host still
reachable by opening a NEW SSH connection, and only that connection disarms the restore. If
none gets through, the host restores itself at the deadline and the operation fails in one
line saying what was rolled back and why. Used by UplinkBridge (its NIC taken over and given
back) and by an adopted Bridge (its addresses changed, and given back at its release).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..connection import AgentCallError, HostError, HostSettings, agent_session, fresh_session
from ..connection.session import AgentSession
from .autostart import stated

PROBE_CONNECT_TIMEOUT = 4.0
DEFAULT_SECONDS = 30
ROLLBACK_SECONDS = (5, 600)  # the host's own bounds (agent/uplink/uplink.py)


def protected(
    props: dict[str, Any],
    op: str,
    args: dict[str, Any],
    subject: str,
    after: Callable[[AgentSession], dict[str, Any]],
    forget_op: str | None = None,
) -> dict[str, Any]:
    """Run `op` under the host's rollback and confirm it over a new connection; then
    `after(session)` on that connection reads the result. `subject` names what changes in
    the error; `forget_op` is called when the host rolled back a change that made it.

    The rollback is disarmed only by a new SSH login: after a change that worked, and after
    a change the agent undid at once as well (the undo is a change too)."""
    settings = HostSettings.from_props(props["connection"])
    seconds = int(props.get("rollback_seconds") or DEFAULT_SECONDS)
    token = secrets.token_hex(16)
    started = time.monotonic()
    refused: AgentCallError | None = None
    try:
        request = stated(props, {**args, "token": token, "rollback_seconds": seconds})
        result = agent_session(settings).call(op, request, timeout=20)
        if result.get("token") is None:
            return dict(result)  # nothing was there to change
    except AgentCallError as exc:
        refused = exc  # refused, or failed and undone at once: the undo must be seen to work
    except HostError:
        pass  # the old session died with the change: the new connection decides
    probe = dataclasses.replace(settings, connect_timeout=PROBE_CONNECT_TIMEOUT)
    last: Exception | None = None
    while time.monotonic() - started < seconds - 2:
        try:
            session = fresh_session(probe)
            session.call("uplink.confirm", {"token": token})
        except AgentCallError as exc:
            if refused is not None:
                raise refused from None  # never armed: refused before any change
            last = exc
            break
        except HostError as exc:
            last = exc
            time.sleep(1)
            continue
        if refused is not None:
            raise refused  # undone at once, and the host is seen reachable
        return after(session)
    # Cut off: the host puts itself back at the deadline. Prove it, then say so.
    time.sleep(max(0.0, seconds - (time.monotonic() - started)) + 1)
    status = _after_rollback(probe, token, props["owner"], forget_op, seconds)
    cause = f"{refused}, and then " if refused is not None else ""
    raise HostError(
        f"{settings.label}: {op.split('.')[1]} of {subject} cut the host off: {cause}no "
        f"new SSH connection got through ({last}); the host restored its previous "
        f"configuration by itself after {seconds} s ({status})"
    )


def _after_rollback(
    probe: HostSettings, token: str, owner: str, forget_op: str | None, seconds: int
) -> str:
    """Read the rollback's result over a new login, which is also what tells the host its
    restore worked (unheard, it applies it again)."""
    deadline = time.monotonic() + 30 + seconds  # the host's second try included
    while True:
        try:
            session = fresh_session(probe)
            status = session.call("uplink.status", {"token": token})
            if status.get("rolled_back") is None and status.get("armed"):
                raise HostError("the rollback has not run yet")  # a slow host: wait
            if forget_op:
                session.call(forget_op, {"owner": owner})
            rolled = status.get("rolled_back") or {}
            if not rolled:
                return "reachable again; the rollback's record was already read"
            if rolled.get("ok"):
                return "rolled back: ok"
            refused = "; ".join(rolled.get("refused") or []) or rolled.get("error") or rolled
            return f"rolled back, reachable, but not all of it went back: {refused}"
        except HostError as exc:
            if time.monotonic() > deadline:
                return f"and it is STILL unreachable after the rollback: {exc}"
            time.sleep(1)
