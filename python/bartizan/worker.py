"""A worker process started by the supervisor: imports the app afresh and serves it on the
listening sockets the supervisor hands over. Not meant to be started by hand."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections.abc import Callable

import bartizan
from bartizan import logs, protocol
from bartizan.app import (
    UserError,
    count_files,
    django_mounts,
    load_app,
    show_traceback,
    static_root_warning,
    warm_django,
)
from bartizan.logs import plural
from bartizan.metrics import rss_bytes
from bartizan.protocol import APP_FAILED, WorkerConfig

METRICS_EVERY = 1.0
# SIGUSR1: the supervisor retires this worker (a reload); the others stop it.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
# Not on every platform (macOS lacks it): there, handlers note the signals and the loop
# polls for them.
sigtimedwait = getattr(signal, "sigtimedwait", None)


def main() -> int:
    config = WorkerConfig.from_env()
    sys.path[:0] = [p for p in config.pythonpath if p not in sys.path]
    recycler = Recycler(**config.recycle)
    try:
        app, static, media, warnings = load(config)
        # Blocked before the server starts its threads, which inherit the mask: the signals
        # then wait for `sigtimedwait` below instead of waking a thread to run a handler.
        if sigtimedwait:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        server = bartizan.Server(
            app,
            listen_fds=config.listen_fds,
            multiprocess=config.multiprocess,
            **dict(config.server, static=static, media=media),
        ).start()
    except UserError as e:
        if config.log_level == "debug" and e.__cause__ is not None:
            show_traceback(e.__cause__)
        logs.log(str(e), "ERROR")
        return APP_FAILED
    except (ValueError, OSError) as e:
        # A bad option value, an access log that cannot be opened: the user's to fix, like an
        # unimportable app.
        logs.log(str(e), "ERROR")
        return APP_FAILED

    # The server holds its own duplicates: closing ours lets a stop really close the port.
    for fd in config.listen_fds:
        os.close(fd)
    signals = note_signals()
    served = describe(static, media, warnings) if config.describe else None
    recycler.check_baseline()
    protocol.write_ready(config.ready_fd, served)
    retire = serve_until_stopped(config, server, recycler, signals)
    stop(config, server, retire)
    return 0


def load(config: WorkerConfig) -> tuple[Callable, list, list, list[str]]:
    """The app, the static and media roots to serve (with a Django project's own, unless
    given or turned off), and any warning about them."""
    static = [tuple(m) for m in config.server["static"]]
    media = [tuple(m) for m in config.server["media"]]
    app = load_app(config.app, config.factory)
    warm_django(config.check)
    warnings = []
    if config.django != "off":
        explicit = {prefix.rstrip("/") for prefix, _ in static + media}
        found = django_mounts(config.django == "on")
        static += [m for m in found["static"] if m[0] not in explicit]
        media += [m for m in found["media"] if m[0] not in explicit]
        warning = static_root_warning() if config.describe else None
        if warning:
            warnings.append(warning)
    return app, static, media, warnings


def note_signals() -> list[int]:
    """The stop signals that arrive from now on, noted as they come. A thread the app
    started before the mask was set may still take one: the handler notes it, and the loop
    sees it within a second."""
    signals: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    # The supervisor handles SIGHUP; a terminal's hang-up must not kill the workers.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return signals


def describe(static: list, media: list, warnings: list[str]) -> dict:
    """What this worker serves, for the supervisor to say at start (see protocol.py)."""
    found = [
        [p, d, count_files(d), kind]
        for kind, ms in (("static", static), ("media", media))
        for p, d in ms
    ]
    return {"mounts": found, "warnings": warnings}


def serve_until_stopped(
    config: WorkerConfig, server: bartizan.Server, recycler: Recycler, signals: list[int]
) -> bool:
    """Serves until a stop signal, writing the metrics samples and asking once to be
    recycled when due. True when the supervisor retires this worker (SIGUSR1)."""
    me = os.getpid()
    # With sigtimedwait, this thread wakes once a second, not more: each wake-up takes the
    # GIL from the thread running the app.
    asked = False
    while not signals:
        if config.metrics_dir:
            write_metrics(server, config.metrics_dir, me)
        if not asked:
            reason = recycler.due(server)
            if reason:
                # The supervisor starts a replacement, then retires this worker (SIGUSR1).
                asked = True
                protocol.ask_recycle(config.control_fd, me, reason)
        info = sigtimedwait(STOP_SIGNALS, METRICS_EVERY) if sigtimedwait else poll(signals)
        if info is not None:
            signals.append(info.si_signo)
        elif not signals and os.getppid() != config.master_pid:
            # The supervisor is gone: nobody would restart or stop us.
            signals.append(signal.SIGTERM)
    return signals[0] == signal.SIGUSR1


def stop(config: WorkerConfig, server: bartizan.Server, retire: bool) -> None:
    me = os.getpid()
    in_flight = server.pending
    cut = server.stop(config.graceful_timeout, retire=retire)
    drained = max(in_flight - cut, 0)
    logs.log(
        f"worker {me} stopped after draining {plural(drained, 'request')}"
        + (f" ({cut} cut off)" if cut else "")
    )
    if config.metrics_dir:
        try:
            os.unlink(os.path.join(config.metrics_dir, f"{me}.prom"))
        except OSError:
            pass


class Recycler:
    """When this worker is due for recycling, and why: after about ``max_requests`` answers
    (plus up to ``max_requests_jitter``, drawn once), past ``max_rss`` MiB resident, or with
    ``stuck_limit`` requests stuck. Zero turns each off."""

    def __init__(
        self, max_requests: int, max_requests_jitter: int, max_rss: int, stuck_limit: int
    ) -> None:
        jitter = random.randint(0, max_requests_jitter) if max_requests else 0
        self.max_requests = max_requests + jitter if max_requests else 0
        self.max_rss = max_rss
        self.stuck_limit = stuck_limit

    def check_baseline(self) -> None:
        """A limit the app is past as soon as it is loaded would recycle every worker as
        soon as it starts: said once, and memory is then not a reason to recycle."""
        rss = resident_mib() if self.max_rss else None
        if rss is not None and rss >= self.max_rss:
            logs.log(
                f"--max-rss {self.max_rss} MiB is below this worker's {rss} MiB right after"
                " loading the app: not recycling for memory",
                "WARN",
            )
            self.max_rss = 0

    def due(self, server: bartizan.Server) -> str | None:
        if self.max_requests and server.answered >= self.max_requests:
            return f"served {server.answered} requests (limit {self.max_requests})"
        if self.max_rss:
            rss = resident_mib()
            if rss is not None and rss >= self.max_rss:
                return f"{rss} MiB resident (limit {self.max_rss} MiB)"
        if self.stuck_limit:
            stuck = server.stuck[0]
            if stuck >= self.stuck_limit:
                return f"{plural(stuck, 'request')} stuck (limit {self.stuck_limit})"
        return None


def resident_mib() -> int | None:
    """This process's resident memory in MiB, where /proc tells it."""
    size = rss_bytes(os.getpid())
    return None if size is None else size >> 20


def poll(signals: list[int]) -> None:
    """Waits up to METRICS_EVERY for a handler to note a signal."""
    end = time.monotonic() + METRICS_EVERY
    while not signals and time.monotonic() < end:
        time.sleep(0.1)


def write_metrics(server: bartizan.Server, directory: str, pid: int) -> None:
    path = os.path.join(directory, f"{pid}.prom")
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(server.metrics_text(f'worker="{pid}"'))
        os.replace(tmp, path)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
