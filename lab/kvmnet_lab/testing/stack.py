"""A throwaway Pulumi project and stack driven through the real CLI, for tests and benches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..hostconfig import write_stack_config
from ..toolchain import PulumiWorkspace

# The repository's stack program (__main__.py): what it builds is all in the stack's config.
STACK_PROGRAM = "from kvmnet_provider.program import build\n\nbuild()\n"


class TestStack:
    __test__ = False  # not a pytest class

    def __init__(self, root: Path, program: str, project: str = "kvt", stack: str = "dev") -> None:
        self.dir = root / project
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ws = PulumiWorkspace(root / "pulumi")
        self.stack = stack
        (self.dir / "Pulumi.yaml").write_text(
            f"name: {project}\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
        )
        self.set_program(program)
        self.ws.run(["stack", "init", stack], self.dir)

    def set_program(self, program: str) -> None:
        (self.dir / "__main__.py").write_text(program)

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.ws.run([*args, "--stack", self.stack], self.dir, check=check)

    def config(self, key: str, value: str, secret: bool = False) -> None:
        extra = ["--secret"] if secret else []
        self.ws.run(["config", "set", *extra, "--stack", self.stack, key, "--", value], self.dir)

    def config_values(self, values: dict[str, Any]) -> None:
        """Merge typed values (objects, lists, numbers) into the stack's config file."""
        write_stack_config(self.dir / f"Pulumi.{self.stack}.yaml", values)

    def up(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.pulumi("up", "--yes", "--skip-preview", check=check)

    def preview(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.pulumi("preview", "--diff", check=check)

    def preview_no_changes(self) -> subprocess.CompletedProcess[str]:
        return self.pulumi("preview", "--expect-no-changes", "--diff")

    def refresh(self) -> subprocess.CompletedProcess[str]:
        return self.pulumi("refresh", "--yes", "--skip-preview")

    def destroy(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.pulumi("destroy", "--yes", "--skip-preview", check=check)

    def outputs(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.pulumi("stack", "output", "--json").stdout)
        return result

    def export(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.pulumi("stack", "export").stdout)
        return result

    def resources(self, type_suffix: str = "") -> list[dict[str, Any]]:
        found = self.export()["deployment"].get("resources") or []
        return [r for r in found if r["type"].endswith(type_suffix)]

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """`pulumi ARGS` in the background, silent, in a process group of its own (the engine,
        language host and provider die together by kill_run)."""
        argv = ["pulumi", "--non-interactive", *args, "--stack", self.stack]
        return subprocess.Popen(
            argv,
            cwd=self.dir,
            env=self.ws.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def kill_run(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a run `start` began (its group), and reap the plugins it left."""
        os.killpg(proc.pid, signal.SIGKILL)  # the group this stack's start made
        proc.wait(30)
        self.ws.reap()  # its plugins, each in a group of its own

    def recover_after_kill(self) -> None:
        """What docs/operations.md tells the operator to run after `pulumi` was killed ("When
        `pulumi up` was interrupted"), the step for a cut metadata write included."""
        cancel = self.pulumi("cancel", "--yes", check=False)
        if cancel.returncode != 0:
            said = cancel.stdout + cancel.stderr
            assert "failed to load checkpoint: EOF" in said, said
            backend = self.ws.root / "backend"
            attrs = next(backend.rglob(f"stacks/{self.dir.name}/{self.stack}.json.attrs"))
            assert attrs.stat().st_size == 0, attrs  # the write the kill cut; the state is whole
            attrs.unlink()
            self.pulumi("cancel", "--yes")
        self.pulumi("refresh", "--yes", "--skip-preview", "--clear-pending-creates")

    def remove(self) -> None:
        self.ws.reap()  # what an engine killed mid-run left: nothing may outlive a test
        self.destroy(check=False)
        self.pulumi("stack", "rm", "--yes", "--force", check=False)
        self.ws.reap()


@contextmanager
def config_stack(root: Path, name: str, config: dict[str, Any]) -> Iterator[TestStack]:
    """A stack `name` of the repository's program with `config`; destroyed and removed
    afterwards, whatever happened."""
    stack = TestStack(root, STACK_PROGRAM, project="kvmnet", stack=name)
    try:
        stack.config_values(config)
        yield stack
    finally:
        stack.remove()
