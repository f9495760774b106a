"""One sshd per lab host, started inside the host's namespace."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .keys import write_file
from .netns import exec_argv, pid_alive, pid_cmdline, run, terminate_pids

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


@dataclass(frozen=True)
class SshdFiles:
    """Files of one host's sshd, all under the host's directory in the state dir."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def pidfile(self) -> Path:
        return self.directory / "sshd.pid"

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def home(self) -> Path:
        """The login's HOME on this host: its own, as on a machine of its own. Without it,
        every SSH command's bash read this machine's /root/.bashrc (which may run `pyenv init`
        on every session), a cost of the test machine, not of a host."""
        return self.directory / "home"


def render_config(files: SshdFiles, address: str, port: int, authorized_keys: Path) -> str:
    lines = [
        f"ListenAddress {address}",
        f"Port {port}",
        f"HostKey {files.host_key}",
        f"PidFile {files.pidfile}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PrintMotd no",
        "UseDNS no",
        "X11Forwarding no",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
        f"SetEnv HOME={files.home}",
        "LogLevel INFO",
    ]
    return "\n".join(lines) + "\n"


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(files: SshdFiles) -> int | None:
    """PID of this host's listening sshd if it runs (checked against its command line)."""
    pid = read_pid(files.pidfile)
    if pid is None or not pid_alive(pid):
        return None
    # sshd rewrites its title ("sshd: /usr/sbin/sshd -f CONFIG ... [listener]")
    if not any(str(files.config) in part for part in pid_cmdline(pid)):
        return None  # PID reused by something else
    return pid


def ensure_sshd(ns: str, files: SshdFiles, address: str, port: int, authorized_keys: Path) -> int:
    """Write the config and start sshd in ns unless it already runs; return its PID."""
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    config = render_config(files, address, port, authorized_keys)
    pid = running_pid(files)
    if pid is not None and files.config.exists() and files.config.read_text() == config:
        return pid
    if pid is not None:  # config changed: restart
        terminate_pids([pid])
    write_file(files.config, config, 0o644)
    files.home.mkdir(mode=0o700, exist_ok=True)
    files.pidfile.unlink(missing_ok=True)
    run([SSHD, "-t", "-f", str(files.config)])
    # sshd daemonises; its parent (ip netns exec -> sshd) exits once the daemon is forked
    run(exec_argv(ns, [SSHD, "-f", str(files.config), "-E", str(files.log)]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = running_pid(files)
        if pid is not None:
            return pid
        time.sleep(0.05)
    raise RuntimeError(f"sshd in {ns} did not write {files.pidfile}; see {files.log}")


def wait_tcp(address: str, port: int, timeout: float = 10.0) -> None:
    """Wait until address:port accepts a TCP connection (bounded)."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{address}:{port} did not accept a connection in {timeout}s: {last}")
