"""StackIdentity: the stack's own random id, kept in its state and written into every owner
mark (spec/marks.py).

Two stacks of the same project and stack name (another backend, another organisation, maybe
the same checkout and so the same Pulumi.<stack>.yaml) must not take each other's objects on
a host for their own. Stack config cannot tell them apart (they may share it); their states
can. The first kvmnet resource a program declares declares the stack's StackIdentity too,
once per program run; its id is made at its create and never changes (its diff is always
"no change"), and it touches no host. At the preview of a stack's first `up` the id is not
known yet: the owners that depend on it are unknown then, as any output of a new resource.
"""

from __future__ import annotations

import secrets
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider
from pulumi.runtime import settings

from ..spec.marks import STACK_ID

RESOURCE_NAME = "kvmnet-stack-identity"


def new_stack_id() -> str:
    """16 hex digits (64 random bits): two stacks that meet on a host never draw the same."""
    return secrets.token_hex(8)


class StackIdentityProvider(ResourceProvider):
    serialize_as_secret_always = False  # the id is no secret: it is written on the hosts

    def create(self, props: dict[str, Any]) -> CreateResult:
        stack_id = new_stack_id()
        return CreateResult(id_=stack_id, outs={"stack_id": stack_id})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=False, replaces=[], stables=["stack_id"])

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        kept = props.get("stack_id")
        stack_id = kept if isinstance(kept, str) and STACK_ID.fullmatch(kept) else id_
        return ReadResult(id_=id_, outs={"stack_id": stack_id})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Nothing on any host: the id goes with the stack's state."""


class StackIdentity(Resource, module="kvmnet", name="StackIdentity"):
    stack_id: pulumi.Output[str]

    def __init__(self, resource_name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(StackIdentityProvider(), resource_name, {"stack_id": None}, opts)


_declared: list[tuple[object, str, str, pulumi.Output[str]]] = []


def stack_id() -> pulumi.Output[str]:
    """This stack's id, its StackIdentity declared at the first call of a program run (a new
    run, as each test's mocks make, declares its own)."""
    monitor, project, stack = settings.get_monitor(), pulumi.get_project(), pulumi.get_stack()
    for seen_monitor, seen_project, seen_stack, known in _declared:
        if seen_monitor is monitor and (seen_project, seen_stack) == (project, stack):
            return known
    made = StackIdentity(RESOURCE_NAME).stack_id
    _declared[:] = [(monitor, project, stack, made)]  # one program run at a time in a process
    return made
