"""Types of the compiled extension (src/lib.rs), for checkers and editors: the Rust side
declares them only to PyO3. `bartizan.Server` wraps `Server`; apps get `FileWrapper` as
``environ["wsgi.file_wrapper"]``."""

from collections.abc import Callable, Mapping, Sequence
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
        options: Mapping[str, Any],
        listen_fds: Sequence[int] = ...,
        multiprocess: bool = False,
    ) -> None:
        """``options``: every option of ``bartizan.options`` a server takes (``bind`` the
        final list of places to listen, not ``host`` and ``port``), as
        ``options.embed_options`` checked them; a missing one is a ``KeyError``."""
    def options(self) -> dict[str, Any]:
        """The options as the server holds them (paths resolved, networks as CIDRs)."""
    def start(self) -> None:
        """Binds and starts serving; returns at once. RuntimeError if already running."""
    def stop(self, timeout: float | None = None, retire: bool = False) -> int:
        """Stops listening and finishes in-flight requests for up to ``timeout`` seconds
        (None: all of them); returns how many were still running when it gave up."""
    def reload_certificates(self) -> None:
        """Reads ``certfile`` and ``keyfile`` again, for the handshakes from now on."""
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
