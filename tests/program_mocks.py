"""What the tests that run a program under Pulumi's mocks share (no engine, no host)."""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi


class Mocks(pulumi.runtime.Mocks):
    """Every resource is made with its inputs as its outputs; calls answer nothing."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


class Recording(Mocks):
    """Mocks that keep every resource made: (type, name, inputs)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.made.append((args.typ, args.name, dict(args.inputs)))
        return super().new_resource(args)


def ensure_event_loop() -> None:
    """Pulumi's mocks take the current event loop; a test that ran asyncio.run() before left
    none (get_event_loop then raises), so one is set where none is."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
