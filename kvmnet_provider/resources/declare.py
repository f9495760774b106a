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
from typing import Any, ClassVar, Generic, TypeVar, dataclass_transform

import pulumi
from pulumi.dynamic import Resource

from .base import Field, KvmnetProvider, Normaliser, deleted_first, owner_id

_KEY = "kvmnet"
_T = TypeVar("_T")
_Args = TypeVar("_Args")
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
    declaring = next(c for c in resource_type.__mro__ if "provider_type" in c.__dict__)
    return tuple(n for n in declaring.__dict__.get("__annotations__", {}) if n not in inputs)


def resource_props(
    resource_type: type, kind: str, resource_name: str, args: Any, **values: object
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


class DeclaredResource(Resource, Generic[_Args]):
    """A kvmnet resource: its props follow from its Args, its outputs from its annotations.

    A subclass names its provider and annotates its outputs; `computed_inputs` and `options`
    are for a resource that derives an input or an option from its arguments. The SDK reads
    the annotations too, as the outputs' types: a value of another shape fails the program.
    """

    provider_type: ClassVar[type[KvmnetProvider]]

    def __init__(
        self, resource_name: str, args: _Args, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        provider = self.provider_type()
        values = self.computed_inputs(resource_name, args)
        props = resource_props(type(self), provider.kind, resource_name, args, **values)
        super().__init__(provider, resource_name, props, self.options(deleted_first(opts)))

    def computed_inputs(self, resource_name: str, args: _Args) -> dict[str, object]:
        return {}

    def options(self, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
        return opts
