"""The layout's promises, checked on the source: what imports what, what ships where.

- kvmnet_provider (the product) imports nothing from kvmnet_lab;
- kvmnet_provider.spec is pure: the standard library and itself only;
- the agent (run on the host) reaches only itself and spec, the two packages shipped;
- the agent keeps its rooms: each job in its own package, only the request loop and what
  every room shares at its root;
- no module of the product is over MAX_LINES lines, and its modules import one another
  without a cycle;
- the shipped tree is exactly those two packages, and the host refuses any other path;
- a wheel of the product holds kvmnet_provider and nothing of the lab.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kvmnet_provider.connection.bootstrap import BOOTSTRAP, agent_sources, code_digest

REPO = Path(__file__).resolve().parent.parent
PROVIDER = REPO / "kvmnet_provider"


def _run_time(tree: ast.Module) -> list[ast.AST]:
    """Every node but those of `if TYPE_CHECKING:` blocks: the imports that run, at the module's
    import or later in a function (a deferred import still closes a loop)."""
    found: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if not (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Name)
                and child.test.id == "TYPE_CHECKING"
            ):
                todo.append(child)
    return found


def imports_of(path: Path, run_time: bool = False) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved); with
    `run_time`, not those only type checkers read. `from m import n` gives m, and m.n too
    when n may be a submodule."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    package = parts if path.name == "__init__.py" else parts[:-1]
    if package and package[-1] == "__init__":
        package = package[:-1]
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in _run_time(tree) if run_time else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
                if node.module is None:  # from . import a, b: the submodules
                    found.update(f"{module}.{alias.name}" for alias in node.names)
                    continue
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def provider_files(sub: str = "") -> list[Path]:
    return sorted((PROVIDER / sub).rglob("*.py"))


def test_the_product_imports_nothing_of_the_lab() -> None:
    offenders = {
        str(f.relative_to(REPO)): sorted(m for m in imports_of(f) if m.startswith("kvmnet_lab"))
        for f in provider_files()
    }
    assert {f: m for f, m in offenders.items() if m} == {}


def test_spec_is_pure_standard_library() -> None:
    allowed = set(sys.stdlib_module_names)
    offenders = {}
    for f in provider_files("spec"):
        bad = sorted(
            m
            for m in imports_of(f)
            if m.split(".")[0] not in allowed and not m.startswith("kvmnet_provider.spec")
        )
        if bad:
            offenders[str(f.relative_to(REPO))] = bad
    assert offenders == {}


def test_the_agent_reaches_only_itself_and_spec() -> None:
    """Only agent/ and spec/ go to the host: anything else the agent imported would fail there."""
    offenders = {}
    for f in provider_files("agent"):
        bad = sorted(
            m
            for m in imports_of(f)
            if m.startswith("kvmnet_provider")
            and not m.startswith(("kvmnet_provider.agent", "kvmnet_provider.spec"))
        )
        if bad:
            offenders[str(f.relative_to(REPO))] = bad
    assert offenders == {}


# The agent's rooms: each package and the modules that do its job.
AGENT_ROOMS = {
    "firewall": {"plan", "backend", "iptables", "iptables_nat", "iptc_import", "nftables",
                 "forwarding", "session_guard"},
    "links": {"netlink", "rtdump", "dump", "readcache", "state", "bridges", "ops", "adoption"},
    "guests": {"operations", "argv", "disks", "kvm", "process", "qmp", "rundir", "qemu_user",
               "socket_rules"},
    "dhcp": {"operations", "config"},
    "uplink": {"uplink", "routes", "adopted"},
    "boot": {"records", "unit", "restore"},
    "verify": {"checks", "packets", "probe", "inside", "blame", "spawn", "outer", "outside",
               "tracked"},
}  # fmt: skip
# The agent's root: the request loop, its workers, and what every room shares.
AGENT_ROOT = {"__init__", "server", "workers", "errors", "hoststate", "rundir", "codelock",
              "ssh_session"}
MAX_LINES = 450


def test_the_agent_keeps_its_rooms() -> None:
    agent = PROVIDER / "agent"
    for room, jobs in AGENT_ROOMS.items():
        assert (agent / room / "__init__.py").is_file(), f"agent/{room} is not a package"
        held = {f.stem for f in (agent / room).glob("*.py")}
        assert jobs <= held, f"agent/{room} lacks {sorted(jobs - held)}"
    at_root = {f.stem for f in agent.glob("*.py")}
    assert at_root == AGENT_ROOT, f"give each new module its room: {sorted(at_root - AGENT_ROOT)}"
    rooms = {d.name for d in agent.iterdir() if d.is_dir() and d.name != "__pycache__"}
    assert rooms == set(AGENT_ROOMS)


def test_no_module_of_the_product_is_over_the_limit() -> None:
    long = {
        str(f.relative_to(REPO)): n
        for f in provider_files()
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by job (at most {MAX_LINES} lines each)"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (or a module importing itself),
    as a sorted list (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_the_product_imports_without_a_cycle() -> None:
    """Over every module of kvmnet_provider, every import that runs: a function's own import
    (deferred to break a loop) counts; one only type checkers read does not."""
    files = {_module_name(f): f for f in provider_files()}
    graph = {
        name: {m for m in imports_of(path, run_time=True) if m in files and m != name}
        for name, path in files.items()
    }
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_resources_do_not_import_the_agents_implementation() -> None:
    """Resources check with spec; the agent's modules are the host's business."""
    files = provider_files("resources")
    assert files, "no resources/ in the product"
    for f in files:
        assert not [m for m in imports_of(f) if m.startswith("kvmnet_provider.agent")], f


def test_the_shipped_tree_is_the_agent_and_spec() -> None:
    files = agent_sources()
    tops = {path.split("/")[1] for path in files if path.count("/") > 1}
    assert tops == {"agent", "spec"}
    assert "kvmnet_agent/agent/guests/operations.py" in files
    assert "kvmnet_agent/spec/guest.py" in files
    assert files["kvmnet_agent/__init__.py"] == ""


def _run_bootstrap(lines: list[str], run_root: Path) -> subprocess.CompletedProcess[str]:
    """The bootstrap as a host runs it (`-I -S -u -c BOOTSTRAP MARKER` from /), these lines on
    its stdin, its code directory under `run_root`."""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-u", "-c", BOOTSTRAP, "MARK"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "KVMNET_HOST_STATE": str(run_root)},
    )
    return proc


def _bootstrap(
    files: dict[str, str], requests: list[dict[str, object]], run_root: Path
) -> list[str]:
    """Run the bootstrap as a host does (`-I -S -u -c BOOTSTRAP MARKER` from /), its code
    directory under `run_root`: the agent's lines after the marker, then its last error line."""
    lines = [json.dumps({"code": code_digest(files)}), json.dumps(files)]
    lines += [json.dumps(r) for r in requests]
    proc = _run_bootstrap(lines, run_root)
    out = proc.stdout.splitlines()
    out = out[out.index("MARK") + 1 :] if "MARK" in out else out
    assert not out or json.loads(out.pop(0)) == {"need": code_digest(files)}  # a new host
    return [*out, *proc.stderr.strip().splitlines()[-1:]]


def test_the_bootstrap_unpacks_the_tree_and_the_agent_answers(tmp_path: Path) -> None:
    out = _bootstrap(agent_sources(), [{"id": 1, "op": "ping", "args": {}}], tmp_path)
    hello = json.loads(out[0])["hello"]
    assert hello["protocol"] == 1
    if os.geteuid() != 0:  # the agent says it needs root, and stops
        assert [m for m in hello["missing"] if m.startswith("root privileges")], hello
        return
    assert hello["missing"] == []  # this venv has everything the agent needs
    assert json.loads(out[1]) == {"id": 1, "ok": True, "result": {"pid": hello["pid"]}}


def test_a_host_that_holds_the_code_starts_the_agent_without_its_files(tmp_path: Path) -> None:
    """The files cross once per version: the second start names their hash and nothing else."""
    files = agent_sources()
    _bootstrap(files, [], tmp_path)  # a new host: it asks for the files, then keeps them
    proc = _run_bootstrap([json.dumps({"code": code_digest(files)})], tmp_path)
    out = proc.stdout.splitlines()
    assert out[0] == "MARK" and "hello" in json.loads(out[1]), proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("first", "error"),
    [
        ({"code": "0" * 32}, "kvmnet: the agent's files do not match their digest"),
        ({"code": "../../etc"}, 'kvmnet: the first line must be {"code": DIGEST}'),
        ({}, 'kvmnet: the first line must be {"code": DIGEST}'),
    ],
)
def test_the_bootstrap_refuses_files_that_are_not_the_named_code(
    first: dict[str, str], error: str, tmp_path: Path
) -> None:
    proc = _run_bootstrap([json.dumps(first), json.dumps(agent_sources())], tmp_path)
    assert proc.stderr.strip().splitlines()[-1] == error
    assert not list(tmp_path.glob("agent-code/*/kvmnet_agent"))  # nothing written


@pytest.mark.parametrize(
    "path",
    [
        "kvmnet_agent/../evil.py",
        "/tmp/evil.py",
        "kvmnet_agent/agent/evil.sh",
        "elsewhere/evil.py",
        "kvmnet_agent/a b/evil.py",
        "kvmnet_agent/./evil.py",
    ],
)
def test_the_bootstrap_refuses_a_path_outside_the_tree(path: str, tmp_path: Path) -> None:
    out = _bootstrap({**agent_sources(), path: "raise SystemExit('ran')"}, [], tmp_path)
    assert out[-1] == "kvmnet: bad agent file name"
    assert not (tmp_path / "agent-code").exists() or not any(
        (tmp_path / "agent-code").glob("*/kvmnet_agent")
    )  # refused before anything was written


def test_a_wheel_of_the_product_holds_no_lab(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("kvmnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"kvmnet_provider", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "kvmnet_provider/agent/guests/argv.py" in names
    assert "kvmnet_provider/spec/wire.py" in names
    assert not [n for n in names if "kvmnet_lab" in n or "/testing/" in n or "/lab/" in n]
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    # The product's one command is the picture; the `kvmnet` command is the lab's.
    assert scripts.split() == [
        "[console_scripts]", "kvmnet-picture", "=", "kvmnet_provider.picture.cli:main"
    ], scripts


def test_users_stack_files_are_ignored_and_the_templates_are_not() -> None:
    """`stacks/Pulumi.<yours>.yaml` holds a user's paths, key and secrets (docs/guests.md: keep it
    out of git); every template in stacks/ stays visible to git."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    templates = sorted(str(p.relative_to(REPO)) for p in (REPO / "stacks").glob("Pulumi.*.yaml"))
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "stacks"], capture_output=True, text=True, check=True
    ).stdout.split()

    def ignored(path: str) -> bool:
        found = subprocess.run(
            ["git", "-C", str(REPO), "check-ignore", "-q", "--no-index", path], check=False
        )
        return found.returncode == 0

    assert tracked and not [t for t in tracked if ignored(t)]
    assert ignored("stacks/Pulumi.mine.yaml") and ignored("stacks/Pulumi.deb.yaml")
    assert set(tracked) <= set(templates)
