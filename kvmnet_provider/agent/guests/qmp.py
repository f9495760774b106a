"""QMP, QEMU's JSON control socket: the qemu.qmp library when the host has it, else a minimal
synchronous client of our own."""

from __future__ import annotations

import json
import socket
from typing import Any


def qmp(path: str, commands: list[str], timeout: float = 3.0) -> list[Any]:
    """Run QMP commands in order over the UNIX socket; their `return` values.

    Uses the `qemu.qmp` library when the host has it, else a minimal synchronous exchange.
    A `quit` may end the connection before its answer: that counts as done.
    """
    try:
        from qemu.qmp import QMPClient
    except ImportError:
        return qmp_plain(path, commands, timeout)
    import asyncio  # here: an import that a guest read (every refresh) never needs

    async def exchange() -> list[Any]:
        client = QMPClient("kvmnet")
        results: list[Any] = []
        await asyncio.wait_for(client.connect(path), timeout)
        try:
            for command in commands:
                try:
                    results.append(await asyncio.wait_for(client.execute(command), timeout))
                except Exception:
                    if command != "quit":
                        raise
                    results.append({})
        finally:
            try:
                await asyncio.wait_for(client.disconnect(), timeout)
            except Exception:
                pass
        return results

    try:
        return asyncio.run(exchange())
    except Exception as exc:
        raise OSError(f"QMP on {path}: {exc.__class__.__name__}: {exc}") from None


def qmp_plain(path: str, commands: list[str], timeout: float) -> list[Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        stream = sock.makefile("rwb")

        def answer() -> dict[str, Any]:
            while True:
                line = stream.readline()
                if not line:
                    raise OSError(f"QMP on {path}: connection closed")
                doc = json.loads(line)
                if "event" not in doc:  # events may arrive at any time
                    return dict(doc)

        greeting = answer()
        if "QMP" not in greeting:
            raise OSError(f"QMP on {path}: unexpected greeting {greeting}")
        results: list[Any] = []
        for command in ["qmp_capabilities", *commands]:
            stream.write(json.dumps({"execute": command}).encode() + b"\n")
            stream.flush()
            try:
                doc = answer()
            except OSError:
                if command == "quit":
                    results.append({})
                    break
                raise
            if "error" in doc:
                raise OSError(f"QMP {command}: {doc['error'].get('desc')}")
            if command != "qmp_capabilities":
                results.append(doc.get("return"))
        return results


def status(path: str) -> str:
    try:
        status = qmp(path, ["query-status"])[0]
    except (OSError, IndexError) as exc:
        return f"unknown ({exc})"
    return str(status.get("status")) if isinstance(status, dict) else "unknown"
