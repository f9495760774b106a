"""A resource's inputs, declared once: its Args dataclass.

Each input of an Args class is a `kvmnet_field`: its rule (the normaliser `check` applies),
its default, whether a change replaces the object, and how the value goes into the state.
An input without a default is required. From that one declaration follow the props the
resource hands to the engine (`resource_props`), the provider's field table
(`field_table`), and the null outputs only the host fills (`host_outputs`: what the
resource class annotates beyond its inputs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

from .base import Field, Normaliser, owner_id

_KEY = "kvmnet"
_T = TypeVar("_T")
_MISSING: Any = dataclasses.MISSING


def kvmnet_field(
    rule: Normaliser,
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] = _MISSING,
    replaces: bool = False,
    prop: Callable[[Any], Any] | None = None,
    init: bool = True,
) -> Any:
    """One input. `prop` turns a set value into its state form (None stays None); `init=False`
    makes a fixed input the user does not pass (the state still carries it, as its default)."""
    required = default is _MISSING and default_factory is _MISSING
    fallback = default_factory() if default_factory is not _MISSING else default
    spec = Field(rule, None if required else fallback, required, replaces, prop)
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, init=init, metadata={_KEY: spec})
    return dataclasses.field(default=default, init=init, metadata={_KEY: spec})


@dataclass_transform(field_specifiers=(kvmnet_field, dataclasses.field))
def declaration(cls: type[_T]) -> type[_T]:
    """An Args class: a plain dataclass whose kvmnet_fields are the resource's inputs."""
    return dataclasses.dataclass(cls)


def _inputs(args_type: type) -> list[tuple[str, Field]]:
    return [(f.name, f.metadata[_KEY]) for f in dataclasses.fields(args_type) if _KEY in f.metadata]


def field_table(args_type: type) -> dict[str, Field]:
    """The provider's fields: each input's rule, default, requirement and replacement."""
    return dict(_inputs(args_type))


def host_outputs(resource_type: type, args_type: type) -> tuple[str, ...]:
    """Outputs only the host knows: what the resource class annotates beyond its inputs."""
    inputs = field_table(args_type)
    return tuple(n for n in resource_type.__dict__.get("__annotations__", {}) if n not in inputs)


def resource_props(
    resource_type: type, kind: str, resource_name: str, args: Any, **values: Any
) -> dict[str, Any]:
    """The state's inputs of a resource: connection, owner, every declared input (`values`
    stands for an input the resource computes itself), and its host outputs, still null."""
    props: dict[str, Any] = {
        "connection": args.connection.to_props(),
        "owner": owner_id(kind, resource_name),
    }
    for name, spec in _inputs(type(args)):
        if name in values:
            props[name] = values[name]
            continue
        value = getattr(args, name)
        props[name] = spec.prop(value) if spec.prop and value is not None else value
    props.update(dict.fromkeys(host_outputs(resource_type, type(args))))
    return props
