"""Port forwards that would capture the agent's own SSH session.

A DNAT of tcp/P to the host itself catches every new SSH login on P: kvmnet could no longer
reach the host, destroy included. The provider refuses host_port == connection.port at
preview, but it can only compare what the program says (a DNS name, a bastion or a NAT in
front of sshd passes); the agent sees where its session really arrived (ssh_session.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from ..errors import AgentError
from ..ssh_session import Endpoint, session_endpoints


def captures(want: dict[str, Any], session: Endpoint) -> bool:
    """Whether a DNAT rule (plan.dnat_want's form) catches connections to `session`: tcp, the
    same port, and either any local address (no destination: `dst-type LOCAL`) or the
    session's own. The rules are IPv4: a session over IPv6 is not theirs to catch. An input
    interface does not spare it: the next login may come in through another one."""
    if want.get("protocol") != "tcp" or want.get("host_port") != session.port:
        return False
    address = ipaddress.ip_address(session.address)
    if address.version != 4:
        return False
    destination = want.get("destination")
    return destination is None or ipaddress.ip_address(destination) == address


def refuse_capture(want: dict[str, Any], sessions: Iterable[Endpoint] | None = None) -> None:
    """Raise the one-line refusal when the DNAT `want` would capture the agent's session."""
    for session in sorted(session_endpoints() if sessions is None else sessions):
        if captures(want, session):
            where = "every address of the host" if want.get("destination") is None else (
                session.address)  # fmt: skip
            raise AgentError(
                "invalid",
                f"host_port must not be {session.port}: a forward of tcp/{session.port} to "
                f"{where} would capture sshd, which kvmnet's session reached at "
                f"{session.address}:{session.port}, and cut kvmnet off the host (nothing was "
                f"changed); pick another host_port",
            )
