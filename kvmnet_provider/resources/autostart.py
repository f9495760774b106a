"""`autostart`: whether an object comes back by itself after its host reboots.

Every host resource has the input (None, the default, means on: a state made before the
input existed reads the same). The host keeps a record of each object it applied and
re-applies them at boot (agent/boot); an object whose requests say `"autostart": false` is
not recorded, and loses the record it had.
"""

from __future__ import annotations

from typing import Any

from ..spec import validate
from ..spec.wire import Args
from .declare import kvmnet_field


def optional_boolean(value: object) -> bool | None:
    return None if value is None else validate.boolean(value)


def autostart_field() -> Any:
    """The `autostart` input of a host resource's Args."""
    return kvmnet_field(optional_boolean, default=None)


def opted_out(props: dict[str, Any]) -> bool:
    return props.get("autostart") is False


def stated(props: dict[str, Any], args: Args) -> Args:
    """`args` of an operation on the object of `props`, saying when it is not to be recorded."""
    return {**args, "autostart": False} if opted_out(props) else args
