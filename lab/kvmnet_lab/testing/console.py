"""Talk to a test guest's shell over its QEMU serial console UNIX socket.

QEMU side: ``-chardev socket,id=s0,path=SOCK,server=on,wait=off,logfile=LOG -serial chardev:s0``.

Each command is sent on one input line, framed by a start and an end marker that embed a
fresh identifier; the end marker also carries ``$?``. The markers are printed with
``printf`` and a format string, so the text the terminal echoes (``__KVMNET_E_%s_%s__``)
never matches the text printed (``__KVMNET_E_<id>_<status>__``).
"""

from __future__ import annotations

import re
import select
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

# Escape sequences busybox's line editor writes (cursor position queries, redraws).
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_MAX_COMMAND = 900  # busybox's line editor and the tty line buffer cap an input line


@dataclass(frozen=True)
class CommandResult:
    output: str
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0


class GuestConsole:
    """A connection to a guest's serial console socket (one client at a time)."""

    def __init__(self, path: str | Path, connect_timeout: float = 10.0) -> None:
        self.path = str(path)
        self._buf = bytearray()
        self._sock = self._connect(connect_timeout)

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.path)
                s.setblocking(False)
                return s
            except OSError as e:  # socket not created yet, or QEMU not listening yet
                s.close()
                last = e
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"cannot connect to serial console {self.path} within {timeout}s: {last}"
                )
            time.sleep(0.1)

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> GuestConsole:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    # -- low level -------------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        """Write raw bytes to the console."""
        raw = data.encode() if isinstance(data, str) else data
        view = memoryview(raw)
        while view:
            _, writable, _ = select.select([], [self._sock], [], 5.0)
            if not writable:
                raise TimeoutError(f"serial console {self.path} does not accept input")
            try:
                n = self._sock.send(view)
            except BlockingIOError:
                continue
            view = view[n:]

    def _read_some(self, until: float) -> bool:
        """Read what is available before `until`; False when nothing arrived."""
        remaining = until - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([self._sock], [], [], min(remaining, 0.5))
        if not readable:
            return False
        try:
            chunk = self._sock.recv(65536)
        except BlockingIOError:
            return False
        if not chunk:
            raise ConnectionError(
                f"serial console {self.path} closed; last output:\n{self._tail()}"
            )
        self._buf += chunk
        return True

    def _tail(self, n: int = 2000) -> str:
        text = bytes(self._buf[-n:]).decode("utf-8", "replace")
        return text.replace("\r", "")

    def _wait_for(
        self, pattern: re.Pattern[bytes], deadline: float, pos: int = 0
    ) -> re.Match[bytes] | None:
        while True:
            m = pattern.search(self._buf, pos)
            if m:
                return m
            if time.monotonic() >= deadline:
                return None
            self._read_some(deadline)

    def _consume(self, end: int) -> None:
        del self._buf[:end]

    # -- API -------------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        """Wait until the guest's shell runs a probe command.

        Probes are re-sent every few seconds: the console may be opened before the shell
        exists (input is then lost) or after the banner was printed.
        """
        deadline = time.monotonic() + timeout
        while True:
            token = uuid.uuid4().hex
            # Typed: `echo __KVMNET_R\EADY_<id>__`; printed: `__KVMNET_READY_<id>__`. A
            # backslash cannot leave the shell waiting for a closing quote if a probe is cut.
            self.send(f"\necho __KVMNET_R\\EADY_{token}__\n")
            pattern = re.compile(rb"__KVMNET_READY_" + token.encode() + rb"__")
            m = self._wait_for(pattern, min(deadline, time.monotonic() + 3.0))
            if m:
                self._consume(m.end())
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"guest shell on {self.path} did not answer within {timeout}s; "
                    f"last output:\n{self._tail()}"
                )

    def run(self, command: str, timeout: float = 20) -> CommandResult:
        """Run `command` in the guest shell; return its output (CR removed) and exit status."""
        if len(command) > _MAX_COMMAND:
            raise ValueError(f"command longer than {_MAX_COMMAND} characters")
        token = uuid.uuid4().hex
        quoted = "'" + command.replace("'", "'\\''") + "'"
        line = (
            f"printf '__KVMNET_B_%s__\\n' {token}; eval {quoted}; "
            f"printf '\\n__KVMNET_E_%s_%s__\\n' {token} \"$?\"\n"
        )
        begin = re.compile(rb"__KVMNET_B_" + token.encode() + rb"__\r*\n")
        end = re.compile(rb"\r*\n__KVMNET_E_" + token.encode() + rb"_(\d+)__")
        deadline = time.monotonic() + timeout
        self.send(line)
        b = self._wait_for(begin, deadline)
        e = self._wait_for(end, deadline, b.end()) if b else None
        if b is None or e is None:
            raise TimeoutError(
                f"command {command!r} did not finish within {timeout}s on {self.path}; "
                f"last output:\n{self._tail()}"
            )
        raw = bytes(self._buf[b.end() : e.start()])
        status = int(e.group(1))
        self._consume(e.end())
        output = _ANSI.sub(b"", raw).decode("utf-8", "replace").replace("\r", "")
        return CommandResult(output=output, status=status)
