"""A do-nothing dynamic resource living in the installed package.

It proves the engine round trip (up, preview, refresh, destroy) and is the floor the
benchmarks compare kvmnet's resources against.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)


def _digest(message: str) -> str:
    return hashlib.sha256(message.encode()).hexdigest()[:16]


class NoopProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        message = str(props["message"])
        outs = {"message": message, "digest": _digest(message)}
        return CreateResult(id_=f"noop-{_digest(message)}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("message") != news.get("message")
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        message = str(news["message"])
        return UpdateResult(outs={"message": message, "digest": _digest(message)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class Noop(Resource):
    message: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(
        self, name: str, message: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(NoopProvider(), name, {"message": message, "digest": None}, opts)
