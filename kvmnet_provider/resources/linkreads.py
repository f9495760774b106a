"""Link reads of one provider process answered from one listing of the host's links.

`pulumi refresh` reads every resource, and the dynamic provider serves four operations at once:
each link read going to the host would wait its turn on the host's one session, so a host's
refresh costs a round trip per link. The first link read instead asks for all of the host's
links (`link.read.all`, from the agent's dump) and the reads after it are answered from that
listing, for READ_AHEAD_TTL at most, and never after this process changed a link on that host
(create, update and delete of Bridge and TapPort forget the host's listing).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..connection.session import AgentSession

READ_AHEAD_TTL = 1.0  # seconds: a change made outside kvmnet is seen by reads after that

_lock = threading.Lock()
_listings: dict[int, tuple[float, AgentSession, dict[str, Any]]] = {}  # id(session) -> ...


def read_link(agent: AgentSession, name: str) -> dict[str, Any] | None:
    """What `link.read` answers for `name`, from the host's recent listing when there is one."""
    with _lock:
        entry = _listings.get(id(agent))
    if entry is not None and entry[1] is agent and time.monotonic() - entry[0] < READ_AHEAD_TTL:
        return entry[2].get(name)
    asked = time.monotonic()
    listing: dict[str, Any] = agent.call_batched("link.read.all", {})
    with _lock:
        _listings[id(agent)] = (asked, agent, listing)
    return listing.get(name)


def forget(agent: AgentSession) -> None:
    """This process is changing a link on the host: reads must ask the host again."""
    with _lock:
        _listings.pop(id(agent), None)
