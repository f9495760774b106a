"""Controller side of the SSH link: settings, credentials, and the per-host agent session."""

from .session import HostError, agent_session, close_all
from .settings import HostSettings

__all__ = ["HostError", "HostSettings", "agent_session", "close_all"]
