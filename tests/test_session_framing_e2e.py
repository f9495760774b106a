"""What a login shell prints before the agent does not break the protocol (real SSH, lab host).

The host's `python` is a wrapper that first prints, as a chatty `.bashrc` or motd would, into
the same stdout the agent then uses."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from kvmnet_lab.hostconfig import host_settings
from kvmnet_lab.lab import LabStatus

from kvmnet_provider.connection.session import AgentSession

pytestmark = pytest.mark.e2e


def test_output_before_the_agent_is_skipped_and_reported_once(
    lab: LabStatus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chatty = tmp_path / "chatty-python3"
    chatty.write_text(
        "#!/bin/sh\n"
        "echo 'Welcome to h1!'\n"
        'echo \'{"hello": {"pid": 1}}\'\n'  # even a line that looks like the agent's hello
        f'exec {sys.executable} "$@"\n'
    )
    chatty.chmod(0o755)
    settings = dataclasses.replace(host_settings(lab.hosts[0], str(chatty)), connect_timeout=5.0)
    session = AgentSession(settings)
    try:
        assert session.preamble == ["Welcome to h1!", '{"hello": {"pid": 1}}']
        assert session.agent_pid != 1
        assert session.call("ping", {})["pid"] == session.agent_pid
    finally:
        session.close()
    reports = [r for r in caplog.records if "skipped 2 line(s)" in r.getMessage()]
    assert len(reports) == 1, caplog.records
