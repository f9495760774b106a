"""How the host agent loads its libraries: the fast paths the start-up figures rely on.

Each case imports for real, in a fresh interpreter (what a new agent is), and fails if the
fast path silently fell back to the slow one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

FRESH = [sys.executable, "-c"]


def run_fresh(code: str) -> dict[str, object]:
    proc = subprocess.run(
        [*FRESH, textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_python_iptables_loads_without_compiler_linker_or_modprobe() -> None:
    """Plain `import iptc` runs ldconfig per library, gcc, ld and modprobe (strace showed
    it); the agent's import runs ldconfig once and nothing else."""
    found = run_fresh(
        """
        import json, os, subprocess
        started = []
        class Recording(subprocess.Popen):
            def __init__(self, args, *a, **kw):
                program = args[0] if isinstance(args, (list, tuple)) else args
                started.append(os.path.basename(str(program)))
                super().__init__(args, *a, **kw)
        subprocess.Popen = Recording
        from kvmnet_provider.agent.firewall.iptc_import import import_iptc
        iptc = import_iptc()
        print(json.dumps({"started": started, "libdir": os.environ.get("XTABLES_LIBDIR"),
                          "rule": hasattr(iptc, "Rule")}))
        """
    )
    assert found["rule"] is True
    assert found["libdir"], "the xtables extension directory was not found the fast way"
    assert found["started"] in ([], ["ldconfig"]), found["started"]


def test_iproute_loads_without_the_rest_of_pyroute2() -> None:
    found = run_fresh(
        """
        import json, sys
        from kvmnet_provider.agent.links.netlink import iproute_class
        ipr = iproute_class()()
        name = ipr.link("get", index=1)[0].get_attr("IFLA_IFNAME")
        print(json.dumps({"lo": name, "loaded": sorted(
            m for m in ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.conntrack") if m in sys.modules
        )}))
        """
    )
    assert found == {"lo": "lo", "loaded": []}


def test_link_reads_and_changes_never_load_pyroute2() -> None:
    """Link reads come from rtdump's own dumps and link changes are rtwrite's own requests,
    so a network's links never pay for importing pyroute2 (most of a session's start-up CPU,
    more than all of a small network's kernel changes)."""
    found = run_fresh(
        """
        import json, sys
        from kvmnet_provider.agent import server
        handlers = server.build_handlers()
        listing = server.handle(handlers, {"id": 1, "op": "link.read.all"})
        one = server.handle(handlers, {"id": 2, "op": "link.read", "args": {"name": "lo"}})
        loaded = any(m.startswith("pyroute2") for m in sys.modules)
        server._handler(handlers, "tap.create")  # a change's module
        print(json.dumps({"lo": listing["result"]["lo"] == one["result"], "kind": one["ok"],
                          "before": loaded, "after": "pyroute2" in sys.modules}))
        """
    )
    assert found == {"lo": True, "kind": True, "before": False, "after": False}
