"""SSH to lab hosts with paramiko, host-key checking on (RejectPolicy + the lab's known_hosts)."""

from __future__ import annotations

import paramiko

from .state import HostStatus


def open_client(
    address: str,
    port: int,
    user: str,
    private_key: str,
    known_hosts: str,
    timeout: float = 5.0,
) -> paramiko.SSHClient:
    """Connected SSHClient; raises (e.g. SSHException, BadHostKeyException) on failure."""
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            address,
            port=port,
            username=user,
            key_filename=private_key,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except BaseException:
        client.close()
        raise
    return client


def connect_host(host: HostStatus, timeout: float = 5.0) -> paramiko.SSHClient:
    return open_client(
        host.address, host.port, host.user, host.private_key, host.known_hosts, timeout
    )


def run_command(client: paramiko.SSHClient, command: str, timeout: float = 10.0) -> tuple[int, str]:
    """Run command, return (exit status, stdout)."""
    _stdin, stdout, _stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


def ssh_reachable(
    address: str, port: int, user: str, private_key: str, known_hosts: str, timeout: float = 5.0
) -> bool:
    """True if we can log in (host key verified) and run `true` successfully."""
    try:
        client = open_client(address, port, user, private_key, known_hosts, timeout)
    except (OSError, paramiko.SSHException):
        return False
    try:
        status, _ = run_command(client, "true", timeout=timeout)
        return status == 0
    except (OSError, paramiko.SSHException):
        return False
    finally:
        client.close()
