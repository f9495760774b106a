"""Structured errors that cross the wire from the agent to the controller."""

from __future__ import annotations

from ..spec.wire import ErrorBody, ErrorKind, error_body


class AgentError(Exception):
    """An operation failed in a way the operator can act on; `kind` says how (see
    spec.wire.ErrorKind)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message

    def to_wire(self) -> ErrorBody:
        return error_body(self.kind, self.message)


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
