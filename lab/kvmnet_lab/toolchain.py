"""Where the Pulumi toolchain lives and how to run the real engine fully offline."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PULUMI_VERSION = "v3.274.1"
REPO_ROOT = Path(__file__).resolve().parents[2]  # lab/kvmnet_lab/toolchain.py
DEMO_PASSPHRASE = "kvmnet-lab"  # the demo's and tests' throwaway stacks; not a secret
DEMO_STATE_DIR = REPO_ROOT / ".pulumi-state"  # the demo's Pulumi home, file backend and project


def cache_dir() -> Path:
    return Path(os.environ.get("KVMNET_CACHE", "/var/cache/kvmnet"))


def pulumi_bin_dir() -> Path:
    """The directory holding pulumi, its Python language host and the two launchers."""
    override = os.environ.get("KVMNET_PULUMI_BIN")
    if override:
        return Path(override)
    return cache_dir() / f"pulumi-{PULUMI_VERSION}" / "bin"


def venv_bin_dir() -> Path:
    """The venv that runs Pulumi programs and dynamic providers (the one running us)."""
    return Path(sys.prefix) / "bin"


def venv_python() -> str:
    """One spelling of the venv's Python, whichever name started us (python, python3):
    it lands in resources' inputs, where another spelling would be a diff."""
    return str(venv_bin_dir() / "python3")


def kvmnet_command() -> str:
    """How to run this `kvmnet` as printed for a person: its name when PATH finds this very
    one, else its full path (the venv is not on PATH unless `kvmnet env` put it there)."""
    ours = venv_bin_dir() / "kvmnet"
    found = shutil.which("kvmnet")
    if found and Path(found).resolve() == ours.resolve():
        return "kvmnet"
    return str(ours)


@dataclass(frozen=True)
class PulumiWorkspace:
    """One offline Pulumi home and file backend: state never leaves `root`."""

    root: Path
    passphrase: str = DEMO_PASSPHRASE
    venv: Path | None = None  # the venv running programs and providers; default: ours

    def settings(self, path: str | None = None) -> dict[str, str]:
        """What this workspace sets on top of the environment (`kvmnet env` prints it)."""
        backend = self.root / "backend"
        home = self.root / "home"
        backend.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        current = path if path is not None else os.environ.get("PATH", "/usr/bin:/bin")
        venv_bin = self.venv / "bin" if self.venv is not None else venv_bin_dir()
        first = [str(pulumi_bin_dir()), str(venv_bin)]
        rest = [d for d in current.split(os.pathsep) if d not in first]  # eval'd twice: once
        return {
            "PATH": os.pathsep.join([*first, *rest]),
            "PULUMI_BACKEND_URL": backend.resolve().as_uri(),
            "PULUMI_HOME": str(home.resolve()),
            "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
            "PULUMI_PYTHON_CMD": str(venv_bin / "python3"),
            "PULUMI_RUNTIME_VIRTUALENV": str(venv_bin.parent),
        }

    def strays(self) -> list[int]:
        """PIDs of processes still running under this workspace's Pulumi home: an engine's
        plugins (the language host, the dynamic provider) outlive an engine that was killed,
        since the engine starts each in a process group of its own."""
        marker = f"PULUMI_HOME={(self.root / 'home').resolve()}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue  # gone, or not ours to read
            if marker in environ.split(b"\0"):
                found.append(int(entry.name))
        return sorted(found)

    def reap(self, timeout: float = 10.0) -> list[int]:
        """Kill (by PID) what strays() finds and wait for it to go; the PIDs killed."""
        pids = self.strays()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline and set(pids) & set(self.strays()):
            time.sleep(0.1)
        return pids

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings())
        env.pop("VIRTUAL_ENV", None)
        return env

    def run(
        self, args: list[str], cwd: Path, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        """Run `pulumi ARGS` non-interactively; on failure raise with the output's tail."""
        proc = subprocess.run(
            ["pulumi", "--non-interactive", *args],
            cwd=cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-4000:]
            raise PulumiError(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n{tail}")
        return proc

    def outputs(self, cwd: Path, stack: str) -> dict[str, object]:
        proc = self.run(["stack", "output", "--json", "--stack", stack], cwd)
        result: dict[str, object] = json.loads(proc.stdout)
        return result


class PulumiError(RuntimeError):
    pass
