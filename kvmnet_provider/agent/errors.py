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


def held_fix(holder: str, owner: str, what: str = "name") -> str:
    """What to do about a `what` that kvmnet resource `holder` holds, as `owner` asks for
    it (marks are `project/stack/Kind/name`)."""
    theirs, ours = holder.split("/")[:2], owner.split("/")[:2]
    if theirs == ours:
        return (
            f"it is this stack's own, not deleted yet (Pulumi creates the new resource before "
            f"it deletes the old one): give the new one another {what}, or run up once "
            "without it so the old one goes first"
        )
    return (
        f"another stack ({'/'.join(theirs)}) holds it: give this one another {what}, "
        "or destroy that stack's first"
    )
