"""Provider side of the SSH link: settings, credentials, and the per-host agent session.

settings.py (what a host is), ssh.py (the connection, host keys), credentials.py (secrets from
stack config, in memory only), bootstrap.py and hostboot.py (shipping the agent), framing.py
(skipping a login shell's chatter), session.py (requests and answers, batching), registry.py
(one session per host), keeper.py and kept.py (sessions kept between commands), errors.py.
"""

from .errors import AgentCallError, HostError
from .registry import agent_session, close_all, fresh_session, keep_sessions
from .settings import HostSettings

__all__ = [
    "AgentCallError",
    "HostError",
    "HostSettings",
    "agent_session",
    "close_all",
    "fresh_session",
    "keep_sessions",
]
