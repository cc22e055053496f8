"""Types of the compiled extension (src/lib.rs), for checkers and editors: the Rust side
declares them only to PyO3. `bartizan.Server` wraps `Server`; apps get `FileWrapper` as
``environ["wsgi.file_wrapper"]``."""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, final

def listen(bind: str) -> list[int]:
    """Opens the listening sockets for ``bind`` as a server would; their descriptors."""

@final
class Server:
    """A WSGI server (or, with ``upstreams``, a reverse proxy) on background threads.
    Thread-safe: every method may be called from any Python thread. ``lock``, ``unlock``,
    ``metrics_text``, ``pending`` and ``addresses`` raise RuntimeError while it is not
    running."""

    def __init__(
        self,
        app: Callable[..., Any] | None,
        binds: Sequence[str],
        *,
        threads: int = 20,
        min_threads: int = 1,
        queue: int = 1024,
        root_path: str = "",
        max_body: int = 1073741824,
        body_timeout: float = 60.0,
        header_timeout: float = 60.0,
        keep_alive: float = 75.0,
        request_timeout: float = 0.0,
        io_threads: int = 2,
        max_head: int = 65536,
        limit_request_line: int = 8190,
        limit_request_field_size: int = 8190,
        limit_request_fields: int = 100,
        max_connections: int = 1000,
        health_path: str | None = None,
        retry_after: int = 1,
        statics: Sequence[tuple[str, str | PathLike[str]]] = ...,
        media: Sequence[tuple[str, str | PathLike[str]]] = ...,
        static_max_age: int = 3600,
        trusted_proxies: Sequence[str] = ...,
        upstreams: Sequence[str] = ...,
        routes: Sequence[tuple[str, str]] = ...,
        upstream_wait: float = 30.0,
        connect_timeout: float = 5.0,
        response_timeout: float = 60.0,
        upstream_health: str | None = None,
        upstream_health_interval: float = 2.0,
        certfile: str | PathLike[str] | None = None,
        keyfile: str | PathLike[str] | None = None,
        listen_fds: Sequence[int] = ...,
        access_log: str | None = None,
        access_log_format: str = "combined",
        multiprocess: bool = False,
    ) -> None: ...
    def start(self) -> None:
        """Binds and starts serving; returns at once. RuntimeError if already running."""
    def stop(self, timeout: float | None = None, retire: bool = False) -> int:
        """Stops listening and finishes in-flight requests for up to ``timeout`` seconds
        (None: all of them); returns how many were still running when it gave up."""
    def lock(self, hold: bool = False) -> None:
        """New WSGI requests get 503 (with ``hold``: wait) until ``unlock()``."""
    def unlock(self) -> None: ...
    def drain(self, timeout: float | None = None) -> int:
        """Waits for in-flight requests; returns how many still run at the deadline."""
    def metrics_text(self, labels: str = "") -> str:
        """Prometheus text; ``labels`` like ``worker="3"`` go on every sample."""
    @property
    def pending(self) -> int:
        """WSGI requests queued or running."""
    @property
    def answered(self) -> int:
        """Requests answered so far."""
    @property
    def stuck(self) -> tuple[int, int]:
        """Requests past ``request_timeout`` still in the app, and how many ever were."""
    @property
    def running(self) -> bool: ...
    @property
    def unix_paths(self) -> list[str]:
        """The unix socket paths it listens on."""
    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs: real ports, also where 0 was asked for."""

@final
class FileWrapper:
    """``wsgi.file_wrapper``: iterates over ``filelike.read(blksize)`` until it returns
    ``b""``; ``close()`` closes the file if it can be closed."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None: ...
    def __iter__(self) -> FileWrapper: ...
    def __next__(self) -> bytes: ...
    def close(self) -> None: ...
