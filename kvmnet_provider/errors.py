"""Expected failures reach the operator as one line; bugs keep their traceback.

Pulumi's dynamic-provider server (`python -m pulumi.dynamic`) wraps every verb in
`_abort_with_traceback`, which sends `traceback.format_exc()` to the engine: an expected
error ("root@h1:22: unreachable: Connection refused") arrives as twenty lines of Python.
The server looks `traceback` up in its module globals when it formats, so kvmnet puts a
stand-in there, in the provider process only, that formats an expected error as its own
message and hands everything else to the real `traceback` module unchanged.

Program-level errors (bad stack config, an impossible model) are `ConfigError`s: a
`pulumi.RunError`, which Pulumi's language host prints as one line without a traceback.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pulumi


class KvmnetError(Exception):
    """An expected failure: its message (host, what failed, why, the fix) is the whole story."""


class ConfigError(KvmnetError, pulumi.RunError, ValueError):
    """A bad declaration in the program or its stack config, naming the key or property."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def config_path(parent: str, key: str) -> str:
    """`key` under the stack-config property `parent`: `kvmnet:hosts.h1` + `bridge` is
    `kvmnet:hosts.h1.bridge`; a namespace's own keys follow its colon (`kvmnet:bridge`)."""
    return f"{parent}{key}" if parent.endswith(":") else f"{parent}.{key}"


def is_expected(exc: BaseException) -> bool:
    """Failures the operator can act on, as opposed to bugs in kvmnet."""
    from .connection.session import HostError
    from .spec.validate import InvalidInput

    return isinstance(exc, (KvmnetError, HostError, InvalidInput))


def one_line(exc: BaseException) -> str:
    """The message on one line (the engine indents continuation lines as a block)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


class _OneLineTraceback(types.ModuleType):
    """Stands in for the `traceback` module in the dynamic-provider server's globals."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__, real.__doc__)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def format_exc(self, limit: int | None = None, chain: bool = True) -> str:
        exc = sys.exc_info()[1]
        if exc is not None and is_expected(exc):
            return one_line(exc)
        formatted: str = self._real.format_exc(limit, chain)
        return formatted


def dynamic_servers() -> list[types.ModuleType]:
    """Pulumi's dynamic-provider server module(s) loaded in this process: `__main__` when the
    engine started `python -m pulumi.dynamic`; none in the program or a test process."""
    found = []
    for name in ("__main__", "pulumi.dynamic.__main__"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "_abort_with_traceback"):
            if isinstance(getattr(module, "traceback", None), types.ModuleType):
                found.append(module)
    return found


def report_expected_errors_as_one_line(servers: list[types.ModuleType] | None = None) -> None:
    """Install the stand-in (once per server module) and quiet paramiko's own logging,
    whose transport thread prints "Exception (client): ..." and a traceback to stderr,
    which the engine shows, for failures that kvmnet already reports as one line."""
    for module in dynamic_servers() if servers is None else servers:
        current = getattr(module, "traceback")  # noqa: B009 -- not every module has it
        if not isinstance(current, _OneLineTraceback):
            setattr(module, "traceback", _OneLineTraceback(current))  # noqa: B010
        quiet_paramiko()


def quiet_paramiko() -> None:
    paramiko_log = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in paramiko_log.handlers):
        paramiko_log.addHandler(logging.NullHandler())
    paramiko_log.propagate = False
