"""The firewall backend interface, the choice between the backends, and the agent's firewall ops.

Two backends with the same operations (masquerade_*, dnat_*, forward_*, input_*):
- "iptables": python-iptables on the legacy x_tables tables (iptables.py, iptables_nat.py);
- "nftables": libnftables' JSON API (the nftables package).
"auto" follows the DROP, so that our accepts land where the host's DROP policy is (a DROP in
any base chain at a hook is final, whatever the table or backend). For the filter hook an
operation works at (forward, input):
  1. a DROP policy there in both the legacy tables and nftables: both (both.py: the filter
     accepts go in each);
  2. a DROP policy there in the legacy tables only: iptables; in nftables only: nftables;
  3. no DROP there: nftables has tables other than kvmnet's own: nftables
     (iptables-nft, firewalld, Docker on Debian 11+/RHEL 8+);
  4. the legacy tables hold rules or a DROP policy (other than kvmnet's): iptables;
  5. the host's `iptables --version` says nf_tables: nftables; otherwise iptables.
Every answer names the backend used ("both" included), which the provider records in the
state; later reads and deletes go to that backend, whatever auto would say by then. NAT (not
blocked by a filter DROP) follows the forward hook's pick, and rules 3-5 when that is both;
so do the input accepts when nothing drops at the input hook.

Changes are serialised between the agents of several stacks on one host by a host-wide lock
(python-iptables commits whole tables; two interleaved commits would lose one's rules);
the iptables backend also holds the xtables lock that other programs take (xtables.py).
A port forward that would capture the agent's own SSH session is refused before either
backend is asked (session_guard.py).
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ...spec import validate
from ...spec.family import FAMILIES, IPV4, Family
from ...spec.firewall import BOTH, FIREWALL_BACKENDS, RECORDED_BACKENDS
from .. import hoststate
from ..errors import AgentError
from . import both, plan, session_guard
from .loading import INSTALL, Backend, load

if TYPE_CHECKING:  # imports libnftables: loaded only through load()
    from . import nft_rules


def _nft_tables() -> list[tuple[str, str]] | None:
    """The host's nftables tables, or None when libnftables is not available."""
    rs = _nft_ruleset()
    return None if rs is None else sorted(rs.tables)


def _nft_ruleset() -> nft_rules.Ruleset | None:
    """The host's nftables ruleset, or None when libnftables is not available."""
    try:
        load("nftables")
    except AgentError:
        return None
    from . import nft_rules as loaded  # importable now: load() imported it

    return loaded.ruleset()


def _legacy_in_use() -> bool:
    """Whether legacy tables hold rules or a DROP policy that are not kvmnet's. Only tables
    the kernel already has are opened: opening one creates it."""
    try:
        with open("/proc/net/ip_tables_names") as f:
            present = set(f.read().split()) & {"filter", "nat"}
    except OSError:
        return False
    if not present:
        return False
    try:
        iptc: Any = importlib.import_module("iptc")
        load("iptables")
    except (ImportError, AgentError):
        return False
    for table_name in sorted(present):
        table = iptc.Table(table_name)
        table.refresh()
        for chain in table.chains:
            if chain.is_builtin() and chain.get_policy().name == "DROP":
                return True
            for rule in chain.rules:
                comment = next((m.comment for m in rule.matches if m.name == "comment"), "")
                if not str(comment).startswith("kvmnet"):
                    return True
    return False


def _iptables_is_nft() -> bool:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    exe = shutil.which("iptables", path=path)
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "nf_tables" in out.stdout


def detect(hook: str = "forward") -> tuple[str, str]:
    """(backend, why) for this host's filter `hook`, following the module docstring's order;
    the backend is "both" when both drop there."""
    legacy, nft = legacy_drop(hook), nft_drop(hook)
    if legacy and nft:
        return BOTH, f"{legacy} and {nft} both have policy DROP"
    if legacy:
        return "iptables", f"{legacy} has policy DROP"
    if nft:
        return "nftables", f"{nft} has policy DROP"
    if hook != "forward":  # nothing to get past here: a network's rules stay together
        return single(detect("forward"))
    return detect_owner()


def single(choice: tuple[str, str]) -> tuple[str, str]:
    """The one backend for what needs only one (NAT, accepts no DROP is in the way of)."""
    return detect_owner() if choice[0] == BOTH else choice


def detect_owner() -> tuple[str, str]:
    """(backend, why): the backend holding the host's own firewall, DROP or not."""
    tables = _nft_tables()
    ours = {(f.nft, "kvmnet") for f in FAMILIES}
    foreign = [t for t in tables or [] if t not in ours]
    if foreign:
        return "nftables", f"nftables has table {foreign[0][0]} {foreign[0][1]}"
    if _legacy_in_use():
        return "iptables", "the legacy iptables tables are in use"
    if _iptables_is_nft():
        if tables is None:
            raise AgentError(
                "missing",
                "this host's iptables is iptables-nft, so kvmnet's rules belong in "
                f"nftables, but libnftables' Python module is missing; install with: "
                f"{INSTALL['nftables']} (or set firewall_backend: iptables)",
            )
        return "nftables", "the host's iptables is iptables-nft"
    return "iptables", "the host's iptables is legacy"


def nft_drop(hook: str) -> str | None:
    """A foreign nftables base chain at filter `hook` with policy drop, in any family."""
    rs = _nft_ruleset()
    if rs is None:
        return None
    ours = {(f.nft, "kvmnet") for f in FAMILIES}
    for chain in rs.chains.values():
        if (chain.get("hook") == hook and chain.get("policy") == "drop"
                and (chain["family"], chain["table"]) not in ours):  # fmt: skip
            return f"nftables table {chain['family']} {chain['table']} chain {chain['name']}"
    return None


def legacy_drop(hook: str) -> str | None:
    """A legacy filter chain at `hook` (FORWARD, INPUT) with policy DROP, in any family."""
    return next((d for f in FAMILIES if (d := _legacy_policy_drop(hook.upper(), f))), None)


def _legacy_policy_drop(chain: str, family: Family) -> str | None:
    try:
        with open(family.iptables_names) as f:
            if "filter" not in f.read().split():
                return None
        load("iptables")
        iptc: Any = importlib.import_module("iptc")
    except (OSError, ImportError, AgentError):
        return None
    table = getattr(iptc, family.iptc_table)(iptc.Table.FILTER)
    table.refresh()
    if iptc.Chain(table, chain).get_policy().name == "DROP":
        command = "iptables" if family == IPV4 else "ip6tables"
        return f"legacy {command} filter {chain}"
    return None


def other_backend_drop(name: str, family: Family = IPV4) -> str | None:
    """A DROP policy on the forward hook held by the OTHER backend, which our rules (in `name`)
    cannot get past: the host's firewall lives there, so firewall_backend is wrong."""
    if name == "iptables":
        rs = _nft_ruleset()
        if rs is None:
            return None
        for chain in rs.forward_bases(family):
            if chain.get("policy") == "drop":
                return f"nftables table {chain['family']} {chain['table']} chain {chain['name']}"
        return None
    return _legacy_policy_drop("FORWARD", family)


def _check_other_backend(backend: Backend, requested: str) -> None:
    if backend.NAME == BOTH:
        return
    other = other_backend_drop(backend.NAME)
    if other:
        # never the setting in use: an explicit one is wrong, auto put them where it can
        hint = (
            "run up again (auto follows the DROP)"
            if requested == "auto"
            else "set the host's firewall_backend to auto (it puts kvmnet's accepts where "
            "the DROPs are)"
        )
        raise AgentError(
            "blocked",
            f"{other} has policy DROP, which kvmnet's {backend.NAME} rules cannot get past; {hint}",
        )


FILTER_HOOKS = {"forward": "forward", "input": "input"}  # op prefix -> filter hook


def choose(args: dict[str, Any], op: str = "") -> Backend:
    """The backend for op (e.g. "forward_ensure"): args' backend, auto resolved for the op's
    filter hook; "both" holds filter accepts only, NAT goes to one backend."""
    name = args.get("backend") or "auto"
    if name not in FIREWALL_BACKENDS and name not in RECORDED_BACKENDS:
        raise validate.InvalidInput(
            f"backend must be one of {', '.join(FIREWALL_BACKENDS)}, got {name!r}"
        )
    hook = FILTER_HOOKS.get(op.split("_")[0])
    if name == "auto":
        if op.endswith("_ensure"):
            _detected.cache_clear()  # a new rule follows the host as it is now
        name = _detected(hook or "nat")
    if name == BOTH and hook is None:  # a state's "both" on a NAT op: not expected
        name = _detected("nat")
    return both if name == BOTH else load(name)  # type: ignore[return-value]


@functools.cache
def _detected(hook: str) -> str:
    """auto for a filter hook, or for NAT ("nat": the forward hook's pick, one backend)."""
    return single(detect("forward"))[0] if hook == "nat" else detect(hook)[0]


@contextmanager
def locked() -> Iterator[None]:
    with hoststate.locked("firewall"):
        yield


def _with_backend(result: Any, backend: Backend) -> Any:
    if isinstance(result, dict):
        result.setdefault("backend", backend.NAME)
    return result


def handlers() -> dict[str, Any]:
    """The agent's firewall operations (merged into server.py's table)."""

    def op(method: str, arg: str | None = None, net: bool = False) -> Any:
        def run(args: dict[str, Any]) -> Any:
            if method == "dnat_ensure":  # before anything is loaded or touched
                session_guard.refuse_capture(plan.dnat_want(args)[1])
            backend = choose(args, method)
            call = getattr(backend, method)
            with locked():
                if net and method.startswith("input_"):
                    rules = plan.InputRules.from_spec(args)
                    result = call(validate.owner(args["owner"]), rules)
                elif net:
                    spec = plan.NetworkRules.from_spec(args)
                    if method == "forward_ensure":
                        _check_other_backend(backend, args.get("backend") or "auto")
                    result = call(validate.owner(args["owner"]), spec)
                elif arg is None:
                    result = call(args)
                else:
                    result = call(validate.owner(args[arg]))
            return _with_backend(result, backend)

        return run

    return {
        "firewall.detect": lambda a: dict(zip(("backend", "why"), detect(), strict=True)),
        "masquerade.read": op("masquerade_read", "owner"),
        "masquerade.ensure": op("masquerade_ensure"),
        "masquerade.remove": op("masquerade_remove", "owner"),
        "dnat.read": op("dnat_read", "owner"),
        "dnat.ensure": op("dnat_ensure"),
        "dnat.remove": op("dnat_remove", "owner"),
        "forward.read": op("forward_read", net=True),
        "forward.ensure": op("forward_ensure", net=True),
        "forward.remove": op("forward_remove", "owner"),
        "forward.admitters": op("forward_admitters", net=True),
        "input.read": op("input_read", net=True),
        "input.ensure": op("input_ensure", net=True),
        "input.remove": op("input_remove", "owner"),
    }
