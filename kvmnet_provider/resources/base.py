"""What every kvmnet dynamic provider shares: validation, diff, and the agent round trip.

A resource kind declares its fields (each with a normaliser), which of them force a
replacement, and how to create/read/update/delete through the host agent. Outputs are
the normalised inputs overlaid with what the kernel reports, so `read` after drift makes
the next `diff` see exactly what changed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.output import Unknown

from .. import errors, serverpool
from ..connection import HostSettings, agent_session, credentials, keep_sessions
from ..connection.session import AgentSession
from ..connection.settings import SettingError
from ..spec.validate import InvalidInput
from . import identity

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi.runtime.rpc.UNKNOWN: not known at preview
Normaliser = Callable[[Any], Any]
errors.report_expected_errors_as_one_line()  # in the provider process: no traceback for them


@dataclass(frozen=True)
class Field:
    normalise: Normaliser
    default: Any = None
    required: bool = False
    replaces: bool = False
    prop: Callable[[Any], Any] | None = None  # the Args' value in the state's form


def deleted_first(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """Every kvmnet object is known on its host by its name (a link, a rule's owner mark, a
    guest): a replacement can be made only once the original is gone. diff says so, but the
    engine does not ask diff when the operator asks for a replacement (`pulumi up --replace`):
    it would create first, finding the original as its own, then delete what it had made."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True))


def host_key(props: dict[str, Any]) -> str:
    """host:port: where every resource id starts, since an object is known on its host."""
    conn = props["connection"]
    return f"{conn['host']}:{int(conn['port'])}"


def owner_id(kind: str, resource_name: str) -> str:
    """The identity written on the host: unique per project, stack, kind and name."""
    raw = f"{pulumi.get_project()}/{pulumi.get_stack()}/{kind}/{resource_name}"
    return identity.owner_mark(raw)  # injective: see identity.py


class KvmnetProvider(ResourceProvider):
    kind: ClassVar[str]
    fields: ClassVar[dict[str, Field]]
    serialize_as_secret_always = False  # the provider instance holds no secret

    # --- to implement per kind ---------------------------------------------------------
    def resource_id(self, props: dict[str, Any]) -> str:
        raise NotImplementedError

    def host_create(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def host_read(self, agent: AgentSession, props: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    def host_update(
        self, agent: AgentSession, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def host_delete(self, agent: AgentSession, props: dict[str, Any]) -> None:
        raise NotImplementedError

    def cross_check(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        """Rules that involve several fields: (property, reason) pairs."""
        return []

    # --- Pulumi's verbs ----------------------------------------------------------------
    def configure(self, req: ConfigureRequest) -> None:
        serverpool.widen()  # the engine's --parallel, not the SDK's four threads, decides
        credentials.configure(
            req.config.get(credentials.CONFIG_PRIVATE_KEY),
            req.config.get(credentials.CONFIG_PASSWORD),
            req.config.get(credentials.CONFIG_PER_HOST),
        )
        credentials.configure_hosts(req.config.get("kvmnet:hosts"))
        keep_sessions(keep_seconds(req.config.get(KEEP_SESSIONS)))

    def normalise(self, news: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        inputs: dict[str, Any] = {}
        failures: list[tuple[str, str]] = []
        try:
            conn = news.get("connection")
            inputs["connection"] = (
                conn if _has_unknown(conn) else HostSettings.from_props(conn).to_props()
            )
        except SettingError as exc:
            failures.append((exc.prop, exc.reason))
        owner = news.get("owner")
        inputs["owner"] = owner
        for name, spec in self.fields.items():
            value = news.get(name)
            if value is None:
                if spec.required:
                    failures.append((name, "is required"))
                inputs[name] = spec.default
                continue
            if _has_unknown(value):
                inputs[name] = value
                continue
            try:
                inputs[name] = spec.normalise(value)
            except InvalidInput as exc:
                failures.append((name, str(exc)))
        if not failures:
            failures.extend(self.cross_check(inputs))
        return inputs, failures

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs, failures = self.normalise(news)
        # A reason about a sub-key (".user_data is ...") reads as "cloud_init.user_data is ...".
        return CheckResult(
            inputs,
            [CheckFailure(p, f"{p}{r}" if r.startswith(".") else f"{p} {r}") for p, r in failures],
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [n for n in self.fields if olds.get(n) != news.get(n)]
        replaces = [n for n in changed if self.fields[n].replaces]
        old_conn, new_conn = olds.get("connection") or {}, news.get("connection") or {}
        if old_conn != new_conn:
            changed.append("connection")
            # Another host is another object; other connection settings change nothing there.
            if _has_unknown(new_conn) or (old_conn.get("host"), old_conn.get("port")) != (
                new_conn.get("host"),
                new_conn.get("port"),
            ):
                replaces.append("connection")
        if olds.get("owner") != news.get("owner"):
            changed.append("owner")
            replaces.append("owner")
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def spec(self, props: dict[str, Any]) -> dict[str, Any]:
        """What the agent needs: the fields and the owner, not the pickled provider."""
        return {"owner": props["owner"], **{n: props.get(n) for n in self.fields}}

    def _agent(self, props: dict[str, Any]) -> AgentSession:
        session = agent_session(_settings(json.dumps(props["connection"], sort_keys=True)))
        if props.get("autostart") is False:  # see autostart.py
            return NoAutostart(session)  # type: ignore[return-value]
        return session

    def _outputs(self, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        return {**props, **live}

    def create(self, props: dict[str, Any]) -> CreateResult:
        agent = self._agent(props)
        if getattr(agent, "boot", "") == "no-systemd" and props.get("autostart") is not False:
            _warn_no_autostart(props["connection"]["host"])
        live = self.host_create(agent, props)
        outs = self._outputs(props, live)
        return CreateResult(id_=self.resource_id(outs), outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        agent = self._agent(props)
        live = self.host_read(agent, props)
        if live is None:  # gone: refresh drops it, the next up recreates it
            agent.call("boot.forget", {"owner": props["owner"]})  # and no boot brings it back
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs=self._outputs(props, live))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        live = self.host_update(self._agent(news), olds, news)
        return UpdateResult(outs=self._outputs(news, live))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        self.host_delete(self._agent(props), props)


class NoAutostart:
    """An agent session whose every request says the object is not to come back at boot
    (autostart.py): the host keeps no record of it."""

    def __init__(self, session: AgentSession) -> None:
        self._session = session

    def call(self, op: str, args: dict[str, Any], timeout: float = 120.0) -> Any:
        return self._session.call(op, {**args, "autostart": False}, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


@functools.cache
def _warn_no_autostart(host: str) -> None:
    """Once per host and run: a host without systemd gets no unit to restore at boot."""
    pulumi.log.warn(
        f"{host}: no systemd (/run/systemd/system is absent): after a reboot nothing kvmnet made "
        "comes back by itself; run `pulumi refresh && pulumi up`, or set autostart: false"
    )


@functools.lru_cache(maxsize=1024)
def _settings(connection: str) -> HostSettings:
    """The settings of a resource's `connection`, checked once per process: a refresh reads
    every resource of a host with the same one, and a lookup is far cheaper than a check."""
    return HostSettings.from_props(json.loads(connection))


KEEP_SESSIONS = "kvmnet:keepSessions"
KEEP_MAX = 3600


def keep_seconds(raw: object) -> float:
    """kvmnet:keepSessions: how long a host's session outlives its last command (0: not)."""
    text = str(raw).strip() if raw is not None else "0"
    if not text.isdigit() or int(text) > KEEP_MAX:
        raise errors.ConfigError(
            KEEP_SESSIONS, f"must be a whole number of seconds from 0 to {KEEP_MAX}, got {raw!r}"
        )
    return float(text)


def is_unknown(value: Any) -> bool:
    """Not known at preview: the engine's sentinel, or the SDK's Unknown (an output of a
    resource that this preview changes)."""
    return isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN)


def _has_unknown(value: Any) -> bool:
    if is_unknown(value):
        return True
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return False


def list_of(item: Normaliser, unique: bool = True, sort: bool = True) -> Normaliser:
    def normalise(value: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"must be a list, got {value!r}")
        items = [item(v) for v in value]
        if unique and len(set(map(str, items))) != len(items):
            raise InvalidInput(f"has duplicates: {items}")
        return sorted(items, key=str) if sort else items

    return normalise
