"""One live agent session per host settings, for the life of the provider process.

Nothing here is pickled: the cache is module state of the installed package.
"""

from __future__ import annotations

import threading

from .kept import kept_session
from .session import AgentSession
from .settings import HostSettings

_sessions: dict[HostSettings, AgentSession] = {}
_sessions_lock = threading.Lock()
_host_locks: dict[HostSettings, threading.Lock] = {}
_keep_seconds = 0.0  # kvmnet:keepSessions: sessions are asked of keepers (kept.py) when > 0


def keep_sessions(seconds: float) -> None:
    global _keep_seconds
    _keep_seconds = seconds


def agent_session(settings: HostSettings) -> AgentSession:
    """The live session for these settings, connecting (once, even under concurrency)."""
    with _sessions_lock:
        host_lock = _host_locks.setdefault(settings, threading.Lock())
    with host_lock:
        session = _sessions.get(settings)
        if session is not None and session.alive:
            return session
        session = kept_session(settings, _keep_seconds) if _keep_seconds else AgentSession(settings)
        _sessions[settings] = session
        return session


def fresh_session(settings: HostSettings) -> AgentSession:
    """A session on a NEW connection (proof that the host is reachable right now), never a
    kept one, which then replaces the cached one for these settings. The old one closes
    once the requests it has in flight are answered."""
    session = AgentSession(settings)
    with _sessions_lock:
        old = _sessions.get(settings)
        _sessions[settings] = session
    if old is not None:
        try:
            old.retire()
        except Exception:
            pass  # it may already be dead: that is why we are here
    return session


def close_all() -> None:
    with _sessions_lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for session in sessions:
        session.close()
