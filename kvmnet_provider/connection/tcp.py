"""The TCP connection under SSH, tuned for small requests and answers.

SSH here is a stream of small packets, each waiting for the other side's answer, and two TCP
defaults turn that into pauses. Our Nagle delay holds back paramiko's authentication
packets. And after authentication OpenSSH sends its host keys (`hostkeys-00@openssh.com`),
then holds the answer to our channel open under its own Nagle delay until we acknowledge
them, which Linux's delayed ACK puts off. So TCP_NODELAY is set, and TCP_QUICKACK is set
again after every read (the kernel drops it by itself).
"""

from __future__ import annotations

import socket

QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class QuickAckSocket(socket.socket):
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if QUICKACK is not None and data:
            self.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        return data


def open_tcp(host: str, port: int, timeout: float) -> socket.socket:
    """A connected socket to host:port (each address in turn, like create_connection)."""
    last: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = QuickAckSocket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last if last is not None else OSError(f"no address for {host}")
