"""The listening sockets the supervisor's workers share. They are opened once, in the
supervisor, and handed to every worker, so that a port is never closed while the server
runs: workers come and go (a crash, a reload) without a refused connection."""

from __future__ import annotations

import os
import socket

from bartizan import _bartizan


class Listeners:
    def __init__(self, scheme: str = "http") -> None:
        # What the workers speak on them, for the URLs the start line shows.
        self.scheme = scheme
        self.sockets: list[socket.socket] = []
        # The unix socket files opened here, removed when the server ends.
        self.files: list[str] = []

    def open(self, fds: list[int], binds: list[str]) -> None:
        """The sockets handed to this process, then one or more for each ``--bind``.
        Raises OSError (an address in use) or ValueError (an address that is none)."""
        for fd in fds:
            self.sockets.append(adopt_listener(fd))
        for bind in binds:
            self.sockets.extend(open_listeners(bind))
            if bind.startswith("unix:"):
                self.files.append(bind[len("unix:") :])

    def fds(self) -> list[int]:
        return [s.fileno() for s in self.sockets]

    def urls(self) -> str:
        return ", ".join(url_of(s, self.scheme) for s in self.sockets)

    def close(self) -> None:
        """Refuses new connections from now on; the workers keep the ones they have."""
        for s in self.sockets:
            s.close()

    def remove_files(self) -> None:
        for path in self.files:
            try:
                os.unlink(path)
            except OSError:
                pass


def open_listeners(bind: str) -> list[socket.socket]:
    """The sockets for one --bind, opened by the extension as a server opens its own."""
    socks = [socket.socket(fileno=fd) for fd in _bartizan.listen(bind)]
    for sock in socks:
        sock.set_inheritable(True)
    return socks


def adopt_listener(fd: int) -> socket.socket:
    """A listening socket this process was handed (--fd, systemd), kept for the workers."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise OSError(e.errno, f"--fd {fd}: {e.strerror}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        raise ValueError(f"--fd {fd}: not a listening stream socket")
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
