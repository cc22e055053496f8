"""A worker process started by the supervisor: imports the app afresh and serves it on the
listening sockets the supervisor hands over. Not meant to be started by hand."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import bartizan
from bartizan.cli import UserError, django_mounts, load_app

METRICS_EVERY = 1.0


def main() -> int:
    config = json.loads(os.environ.pop("BARTIZAN_WORKER_CONFIG"))
    ready_fd = config.pop("ready_fd")
    master = config.pop("master_pid")
    metrics_dir = config.pop("metrics_dir")
    spec, factory = config.pop("app"), config.pop("factory")
    django = config.pop("django")
    mounts = [tuple(m) for m in config.pop("static")]
    graceful_timeout = config.pop("graceful_timeout")
    try:
        app = load_app(spec, factory)
        if django != "off":
            explicit = {prefix.rstrip("/") for prefix, _ in mounts}
            mounts += [m for m in django_mounts(django == "on") if m[0] not in explicit]
        server = bartizan.Server(app, static=mounts, **config).start()
    except UserError as e:
        print(f"bartizan: {e}", file=sys.stderr, flush=True)
        return 2
    except ValueError as e:
        # A bad option value: the user's to fix, like an unimportable app.
        print(f"bartizan: {e}", file=sys.stderr, flush=True)
        return 2
    except OSError as e:
        print(f"bartizan: {e}", file=sys.stderr, flush=True)
        return 1

    # The server holds its own duplicates: closing ours lets a stop really close the port.
    for fd in config.get("listen_fds", []):
        os.close(fd)
    signals: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    # The supervisor handles SIGHUP; a terminal's hang-up must not kill the workers.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.write(ready_fd, b"ok\n")
    os.close(ready_fd)

    me = os.getpid()
    next_metrics = 0.0
    while not signals:
        if os.getppid() != master:
            # The supervisor is gone: nobody would restart or stop us.
            signals.append(signal.SIGTERM)
            break
        if metrics_dir and time.monotonic() >= next_metrics:
            write_metrics(server, metrics_dir, me)
            next_metrics = time.monotonic() + METRICS_EVERY
        time.sleep(0.1)
    retire = signals[0] == signal.SIGUSR1
    in_flight = server.pending
    cut = server.stop(graceful_timeout, retire=retire)
    print(
        f"bartizan: worker {me} stopped after draining {max(in_flight - cut, 0)} requests"
        + (f" ({cut} cut off)" if cut else ""),
        file=sys.stderr,
        flush=True,
    )
    if metrics_dir:
        try:
            os.unlink(os.path.join(metrics_dir, f"{me}.prom"))
        except OSError:
            pass
    return 0


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
