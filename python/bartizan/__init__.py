"""Bartizan: a fast, hardened web server for WSGI (Django) sites, written in Rust.

Embed it in a running process::

    server = bartizan.Server(app, host="127.0.0.1", port=8000, threads=20)
    server.start()          # returns at once; requests are served on background threads
    ...
    server.stop()

or block in it with ``bartizan.serve(app, ...)``.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from bartizan import options
from bartizan._bartizan import FileWrapper
from bartizan._bartizan import Server as _CoreServer

__all__ = ["FileWrapper", "Proxy", "Server", "format_address", "serve"]

# Servers still running at interpreter exit are stopped first: their threads must not be
# inside Python while it shuts down.
_live: weakref.WeakSet[Server] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop(timeout=5)


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 hosts in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class Server:
    """A WSGI server that runs beside the calling code.

    The keyword arguments are the options of ``bartizan.options`` (the same as the command
    line's flags, with underscores): ``threads=8``, ``static={"/static": "static"}``,
    ``trusted_proxies=["10.0.0.0/8"]`` and so on; ``bind`` is a list of ``"host:port"``
    strings (``"[::1]:8000"`` for IPv6) used instead of ``host`` and ``port``. Port 0 picks
    a free port (see ``port``). A bad value is a ``ValueError`` naming the option.
    """

    def __init__(
        self,
        app: Callable | None,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        listen_fds: Iterable[int] = (),
        multiprocess: bool = False,
        **given: Any,
    ) -> None:
        values = options.embed_options({"host": host, "port": port, **given})
        if not values["upstreams"] and not callable(app):
            raise TypeError(f"app must be a WSGI callable, not {type(app).__name__}")
        listen_fds = list(listen_fds)
        if values["bind"]:
            binds = values["bind"]
        elif listen_fds:
            binds = []  # sockets handed over by a supervisor
        else:
            binds = [format_address(values["host"], values["port"])]
        self.static = values["static"]
        self.app = app
        # Everything but host and port, which `bind` now stands for, goes to the core as is.
        core = {k: v for k, v in values.items() if k not in ("host", "port")}
        core["bind"] = binds
        for path in ("certfile", "keyfile", "access_log"):
            if core[path] is not None:
                core[path] = os.fspath(core[path])
        self._core = _CoreServer(app, core, listen_fds, multiprocess)
        self.scheme = "https" if values["certfile"] or values["https"] else "http"
        self.threads = values["threads"]

    def start(self) -> Server:
        """Bind and serve on background threads; returns at once."""
        self._core.start()
        _live.add(self)
        return self

    def stop(self, timeout: float | None = None, retire: bool = False) -> int:
        """Stop listening, let in-flight requests finish (up to ``timeout`` seconds).

        With ``retire``, connections are handed over gently (a reload): each closes after
        its next response instead of being cut while idle. Returns how many requests were
        still running when it gave up.
        """
        _live.discard(self)
        return self._core.stop(timeout, retire)

    def reload_certificates(self) -> None:
        """Read ``certfile`` and ``keyfile`` again: new connections get what they now hold,
        open ones keep theirs. (Certificates over ACME renew themselves.)"""
        self._core.reload_certificates()

    def lock(self, hold: bool = False) -> None:
        """New app requests get 503 (with ``hold``: wait) until ``unlock()``."""
        self._core.lock(hold)

    def unlock(self) -> None:
        self._core.unlock()

    def drain(self, timeout: float | None = None) -> int:
        """Wait for in-flight requests; returns how many are still running at the deadline."""
        return self._core.drain(timeout)

    def metrics_text(self, labels: str = "") -> str:
        """Prometheus text for this server (``labels`` like ``worker="1"`` on each sample)."""
        return self._core.metrics_text(labels)

    @property
    def pending(self) -> int:
        """App requests queued or running."""
        return self._core.pending

    @property
    def answered(self) -> int:
        """Requests answered so far (by the app, the static roots or the proxy front)."""
        return self._core.answered

    @property
    def stuck(self) -> tuple[int, int]:
        """App requests past ``request_timeout`` still running, and how many ever were."""
        return self._core.stuck

    @property
    def running(self) -> bool:
        return self._core.running

    @property
    def addresses(self) -> list[str]:
        """The bound ``host:port`` addresses (real ports, also when 0 was asked for)."""
        return [format_address(h, p) for h, p in self._core.addresses]

    @property
    def unix_paths(self) -> list[str]:
        """The unix socket paths it listens on (``bind=["unix:/run/app.sock"]``)."""
        return [os.fspath(p) for p in self._core.unix_paths]

    @property
    def port(self) -> int:
        """The first bound port."""
        return self._core.addresses[0][1]

    @property
    def urls(self) -> list[str]:
        """Where it listens: ``http://host:port``, and ``unix:/path`` for a unix socket."""
        return [f"{self.scheme}://{a}" for a in self.addresses] + [
            f"unix:{p}" for p in self.unix_paths
        ]

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Proxy(Server):
    """The reverse-proxy front: listens publicly and forwards to app servers.

    ``upstreams`` are ``"host:port"`` strings, used round-robin. While none accepts a
    connection (an app server restarting), a request waits up to ``upstream_wait`` seconds
    before it gets a 503 with ``Retry-After``. ``routes`` (``{"/prefix": "host:port"}``)
    send the requests under a path prefix elsewhere; ``static`` mounts are served by the
    proxy itself. Forwarding headers from peers outside ``trusted_proxies`` are dropped, and
    the peer's address appended.
    """

    def __init__(
        self, upstreams: Iterable[str], host: str = "127.0.0.1", port: int = 8000, **given: Any
    ):
        upstreams = list(upstreams)
        if not upstreams:
            raise options.OptionError(
                options.BY_NAME["upstreams"], upstreams, "at least one upstream is needed"
            )
        super().__init__(None, host, port, upstreams=upstreams, **given)


def reload_certificates(server: Server) -> None:
    """SIGHUP: the certificate files are read again; a failure is said and the old kept."""
    from bartizan import logs

    try:
        server.reload_certificates()
    except (ValueError, OSError) as e:
        logs.log(f"certificates not reloaded, the old ones are kept: {e}", "WARN")
    else:
        if server.scheme == "https":
            logs.log("certificates reloaded")


def serve(
    app: Callable | None,
    *,
    graceful_timeout: float = 30.0,
    on_start: Callable[[Server], None] | None = None,
    **options,
) -> int:
    """Serve ``app`` (or, with ``upstreams=``, proxy) until SIGINT or SIGTERM.

    Returns how many requests were cut off. The first signal stops taking connections and
    lets in-flight requests finish for up to ``graceful_timeout`` seconds; a second one stops
    at once.
    """
    server = Server(app, **options).start()
    if on_start is not None:
        on_start(server)
    # Signal handlers only count: taking a lock in a handler can deadlock against the very
    # frame it interrupted, so the loops below poll with short sleeps instead.
    signals_seen: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signals_seen.append(signum)

    reloads: list[int] = []
    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda s, f: reloads.append(s))
    try:
        while not signals_seen and server.running:
            if reloads:
                reloads.clear()
                reload_certificates(server)
            time.sleep(0.1)
        if signals_seen:
            from bartizan import logs

            logs.log(
                f"stopping: in-flight requests get up to {graceful_timeout:g} s to finish;"
                " press Ctrl-C again (or send SIGTERM) to stop at once"
            )
        # Stop on a helper thread so a second signal can still cut the wait short.
        result: list[int] = []
        t = threading.Thread(
            target=lambda: result.append(server.stop(graceful_timeout)), daemon=True
        )
        t.start()
        while t.is_alive() and len(signals_seen) < 2:
            time.sleep(0.05)
        if t.is_alive():
            # Asked twice: leave now, without waiting for app threads that may never return.
            sys.stderr.flush()
            os._exit(1)
        return result[0] if result else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
