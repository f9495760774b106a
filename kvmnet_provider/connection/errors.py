"""The provider side's errors: one line naming the host and the cause, never key material."""

from __future__ import annotations

from ..spec.wire import ErrorKind

# Ends a message about an operation cut off midway: running it again is safe.
RETRY_HINT = "; run it again: what it began is found again by its owner mark"


class HostError(RuntimeError):
    """One line naming the host and the cause; never carries key material."""


class AgentCallError(HostError):
    """The host agent answered a request with an error of `kind`."""

    def __init__(self, label: str, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{label}: {message}")
        self.kind = kind
