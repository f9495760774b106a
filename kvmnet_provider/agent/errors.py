"""Structured errors that cross the wire from the agent to the controller."""

from __future__ import annotations

from ..spec import marks
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
    it (marks are `project/stack@STACKID/Kind/name`, see spec/marks.py)."""
    (theirs, their_id), (ours, our_id) = marks.stack_of(holder), marks.stack_of(owner)
    if theirs == ours and their_id and our_id and their_id != our_id:
        return (
            f"another stack of the same name ({theirs}, stack id {their_id}: another backend "
            f"or organisation) holds it: give this one another {what}, or destroy that "
            "stack's first"
        )
    if theirs == ours:  # the same id, or a mark made before stack ids
        return (
            f"it is this stack's own, not deleted yet (Pulumi creates the new resource before "
            f"it deletes the old one): give the new one another {what}, or run up once "
            "without it so the old one goes first"
        )
    return (
        f"another stack ({theirs or holder}) holds it: give this one another {what}, "
        "or destroy that stack's first"
    )
