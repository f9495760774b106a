"""Structured errors that cross the wire from the agent to the controller."""

from __future__ import annotations


class AgentError(Exception):
    """An operation failed in a way the operator can act on.

    kind: "invalid" (bad request), "conflict" (an object exists that is not ours),
    "missing" (a needed component is absent on the host), "failed" (the kernel refused).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}
