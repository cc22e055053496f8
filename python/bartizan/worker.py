"""A worker process started by the supervisor: imports the app afresh and serves it on the
listening sockets the supervisor hands over. Not meant to be started by hand."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import bartizan
from bartizan import logs
from bartizan.app import (
    UserError,
    count_files,
    django_mounts,
    load_app,
    show_traceback,
    static_root_warning,
    warm_django,
)
from bartizan.metrics import rss_bytes

METRICS_EVERY = 1.0
# SIGUSR1: the supervisor retires this worker (a reload); the others stop it.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
# Not on every platform (macOS lacks it): there, handlers note the signals and the loop
# polls for them.
sigtimedwait = getattr(signal, "sigtimedwait", None)


def main() -> int:
    config = json.loads(os.environ.pop("BARTIZAN_WORKER_CONFIG"))
    ready_fd = config.pop("ready_fd")
    master = config.pop("master_pid")
    metrics_dir = config.pop("metrics_dir")
    spec, factory = config.pop("app"), config.pop("factory")
    django = config.pop("django")
    mounts = [tuple(m) for m in config.pop("static")]
    media = [tuple(m) for m in config.pop("media")]
    graceful_timeout = config.pop("graceful_timeout")
    debug = config.pop("log_level") == "debug"
    check = config.pop("check")
    describe = config.pop("describe")
    control_fd = config.pop("control_fd")
    recycler = Recycler(**config.pop("recycle"))
    sys.path[:0] = [p for p in config.pop("pythonpath") if p not in sys.path]
    warnings = []
    try:
        app = load_app(spec, factory)
        warm_django(check)
        if django != "off":
            explicit = {prefix.rstrip("/") for prefix, _ in mounts + media}
            found = django_mounts(django == "on")
            mounts += [m for m in found["static"] if m[0] not in explicit]
            media += [m for m in found["media"] if m[0] not in explicit]
            warning = static_root_warning() if describe else None
            if warning:
                warnings.append(warning)
        # Blocked before the server starts its threads, which inherit the mask: the signals
        # then wait for `sigtimedwait` below instead of waking a thread to run a handler.
        if sigtimedwait:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        server = bartizan.Server(app, static=mounts, media=media, **config).start()
    except UserError as e:
        if debug and e.__cause__ is not None:
            show_traceback(e.__cause__)
        logs.log(str(e), "ERROR")
        return 2
    except (ValueError, OSError) as e:
        # A bad option value, an access log that cannot be opened: the user's to fix, like an
        # unimportable app.
        logs.log(str(e), "ERROR")
        return 2

    # The server holds its own duplicates: closing ours lets a stop really close the port.
    for fd in config.get("listen_fds", []):
        os.close(fd)
    # A thread the app started before the mask was set may still take a signal: the handler
    # notes it, and the loop sees it within a second.
    signals: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    # The supervisor handles SIGHUP; a terminal's hang-up must not kill the workers.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # What this worker serves, when the supervisor asked it to say so at start.
    served = b""
    if describe:
        found = [
            [p, d, count_files(d), kind]
            for kind, ms in (("static", mounts), ("media", media))
            for p, d in ms
        ]
        served = json.dumps({"mounts": found, "warnings": warnings}).encode()
    recycler.check_baseline()
    os.write(ready_fd, b"ok " + served + b"\n")
    os.close(ready_fd)

    me = os.getpid()
    # With sigtimedwait, this thread wakes once a second, not more: each wake-up takes the
    # GIL from the thread running the app.
    asked = False
    while not signals:
        if metrics_dir:
            write_metrics(server, metrics_dir, me)
        if not asked:
            reason = recycler.due(server)
            if reason:
                # The supervisor starts a replacement, then retires this worker (SIGUSR1).
                asked = True
                try:
                    os.write(control_fd, f"recycle {me} {reason}\n".encode())
                except OSError:
                    pass
        info = sigtimedwait(STOP_SIGNALS, METRICS_EVERY) if sigtimedwait else poll(signals)
        if info is not None:
            signals.append(info.si_signo)
        elif not signals and os.getppid() != master:
            # The supervisor is gone: nobody would restart or stop us.
            signals.append(signal.SIGTERM)
    retire = signals[0] == signal.SIGUSR1
    in_flight = server.pending
    cut = server.stop(graceful_timeout, retire=retire)
    drained = max(in_flight - cut, 0)
    logs.log(
        f"worker {me} stopped after draining {plural(drained, 'request')}"
        + (f" ({cut} cut off)" if cut else "")
    )
    if metrics_dir:
        try:
            os.unlink(os.path.join(metrics_dir, f"{me}.prom"))
        except OSError:
            pass
    return 0


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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
