"""The CLI's master process: owns the listening sockets and runs worker processes on them.

The master runs no app code and no server threads of its own; it decides when workers start
and when they stop:

- A worker that dies is restarted with backoff, and says so in a log line.
- A worker that asks to be recycled gets its replacement first; only once that one serves
  does the old one stop taking connections and drain.
- SIGHUP (or a changed ``.py`` file with ``--reload``): a new set of workers imports the
  app afresh; once all of them are serving, the old ones retire (they answer what they have
  and close each connection after its next response). If the new app fails to start, the
  old workers keep serving and the reason is logged.
- SIGTERM / SIGINT: every worker stops taking connections and finishes its in-flight
  requests within the graceful timeout; a second signal ends them at once.

Its parts, one job each: the sockets (listeners.py), starting a worker (spawn.py), what a
worker and the master say to each other (protocol.py), the wait after a failure
(backoff.py), the ``--reload`` watcher (watcher.py), the metrics page (metrics.py).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

from bartizan.backoff import Backoff
from bartizan.listeners import Listeners
from bartizan.logs import log, plural
from bartizan.metrics import Endpoint as MetricsEndpoint
from bartizan.protocol import APP_FAILED, ControlPipe, WorkerConfig
from bartizan.spawn import Worker, kill, spawn, wait_ready
from bartizan.watcher import SourceWatcher


def ended(code: int) -> str:
    """How a worker's process ended, as a person would say it."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(
        self,
        worker_config: WorkerConfig,
        binds: list[str],
        workers: int,
        threads: int,
        graceful_timeout: float,
        reload: bool = False,
        metrics: str | None = None,
        demo: bool = False,
        fds: list[int] | None = None,
    ) -> None:
        self.config = worker_config
        self.binds = binds
        self.fds = fds or []
        self.count = workers
        self.threads = threads
        self.graceful_timeout = graceful_timeout
        self.reload_on_change = reload
        self.metrics_addr = metrics
        self.demo = demo
        secure = worker_config.server.get("certfile") or worker_config.server.get("https")
        self.listeners = Listeners("https" if secure else "http")
        self.endpoint: MetricsEndpoint | None = None
        self.control = ControlPipe()
        self.workers: list[Worker] = []
        self.backoff = Backoff()
        self.respawn_at = 0.0
        # What the first worker said it serves (mounts, warnings), told once at start.
        self.served: dict | None = None
        # What the signals asked for (see the handle_ methods), and how many came.
        self.stop_asked = False
        self.reload_asked = False
        self.signals_seen = 0

    # -- the main loop ----------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self.serve()
        finally:
            # On every way out, a failed start too: nothing made here outlives the server.
            if self.endpoint:
                self.endpoint.remove_directory()
            self.listeners.remove_files()

    def serve(self) -> int:
        failed = self.open()
        if failed is None:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, self.on_signal)
            failed = self.start_first()
        if failed is not None:
            return failed
        self.announce()
        watcher = SourceWatcher() if self.reload_on_change else None
        while not self.stop_asked:
            if self.reload_asked:
                self.reload_asked = False
                self.reload("SIGHUP")
            changed = watcher.poll() if watcher else None
            if changed:
                self.reload(f"{changed} changed")
            self.reap()
            self.replace_missing()
            self.note_recycle_requests()
            self.recycle_due_workers()
            time.sleep(0.05)
        return self.shutdown()

    # -- signals ----------------------------------------------------------------------------
    def on_signal(self, signum: int, frame: object) -> None:
        """Hands the signal to its method, which only notes what it asks for: the loop acts.
        Work in a handler (a lock taken) can deadlock the frame it interrupted."""
        self.signals_seen += 1
        handle = {
            signal.SIGHUP: self.handle_hup,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_int,
        }[signum]
        handle()

    def handle_hup(self) -> None:
        """Reload: new workers import the app afresh, then the old ones retire."""
        self.reload_asked = True

    def handle_term(self) -> None:
        """Stop, letting requests finish; any signal while they do stops them at once."""
        self.stop_asked = True

    def handle_int(self) -> None:
        """Ctrl-C: as SIGTERM."""
        self.handle_term()

    def start_abandoned(self) -> bool:
        """Whether a start under way gives up: a stop was asked, and no reload is pending."""
        return self.stop_asked and not self.reload_asked

    # -- starting ---------------------------------------------------------------------------
    def open(self) -> int | None:
        """The sockets and the metrics page; an exit code when one cannot be had."""
        try:
            self.listeners.open(self.fds, self.binds)
        except (OSError, ValueError) as e:
            # An address in use or unknown is the user's to fix, like a bad value.
            log(str(e))
            return 2
        if self.metrics_addr:
            try:
                self.endpoint = MetricsEndpoint(self.metrics_addr, self.pids)
            except (OSError, ValueError) as e:
                log(f"cannot serve metrics on {self.metrics_addr}: {e}")
                return 1
        self.config = dataclasses.replace(
            self.config,
            listen_fds=self.listeners.fds(),
            control_fd=self.control.write_fd,
            master_pid=os.getpid(),
            metrics_dir=self.endpoint.directory if self.endpoint else None,
            multiprocess=self.count > 1,
        )
        return None

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def start_first(self) -> int | None:
        """The first workers. An app that cannot start ends the server (its worker has said
        why, in one line): exit code 2. A worker that dies otherwise while starting (killed
        by the OOM killer or an operator) is replaced like any that dies later."""
        batch = [spawn(self.config, describe=i == 0) for i in range(self.count)]
        failed = wait_ready(batch, self.start_abandoned)
        if failed is None:
            kill(batch)
            return 1
        if any(code == APP_FAILED for _, code in failed):
            kill(batch)
            return APP_FAILED
        for w, code in failed:
            batch.remove(w)
            delay = self.backoff.failed()
            self.respawn_at = time.monotonic() + delay
            log(f"worker {w.pid} {ended(code)} while starting; starting another in {delay:.1f} s")
        self.workers = batch
        self.served = next((w.served for w in batch if w.served), None)
        return None

    def start_generation(self, n: int) -> list[Worker] | int:
        """``n`` new workers, all serving; or the exit code of one that failed."""
        batch = [spawn(self.config) for _ in range(n)]
        failed = wait_ready(batch, self.start_abandoned)
        if failed == []:
            return batch
        kill(batch)
        return failed[0][1] if failed else 1

    def announce(self) -> None:
        """Where it listens; what runs: the app, each static mount, what --reload watches,
        any warning; where the metrics are."""
        extra = f", workers: {self.count}" if self.count > 1 else ""
        log(f"listening on {self.listeners.urls()} (threads: {self.threads}{extra})")
        app = self.config.app
        log(f"serving the bundled demo site ({app})" if self.demo else f"serving {app}")
        served = self.served or {}
        for prefix, directory, files, kind in served.get("mounts", []):
            log(f"{kind} {prefix}/ from {directory} ({plural(files, 'file')})")
        if self.reload_on_change:
            log(f"reloading when a .py file under {os.getcwd()} changes")
        for warning in served.get("warnings", []):
            log(f"warning: {warning}", "WARN")
        if self.endpoint:
            log(f"metrics on {self.endpoint.url}")

    # -- replacing --------------------------------------------------------------------------
    def reap(self) -> None:
        """Notes the workers that died; one log line for each that was not retiring."""
        now = time.monotonic()
        for w in list(self.workers):
            code = w.proc.poll()
            if code is None:
                continue
            self.workers.remove(w)
            if w.retiring:
                continue
            delay = self.backoff.failed(lived=now - w.started)
            self.respawn_at = now + delay
            log(f"worker {w.pid} {ended(code)}; starting another in {delay:.1f} s")

    def replace_missing(self) -> None:
        """Starts a worker in place of one that died, once the backoff allows."""
        missing = self.count - sum(1 for w in self.workers if not w.retiring)
        if missing <= 0 or time.monotonic() < self.respawn_at or self.stop_asked:
            return
        replacement = self.start_generation(1)
        if isinstance(replacement, list):
            self.workers.extend(replacement)
            log(f"worker {replacement[0].pid} started")
            return
        # The app no longer starts (say, a broken deploy): keep trying, ever slower.
        delay = self.backoff.failed()
        log(f"a new worker did not start (exit code {replacement}); trying again in {delay:.1f} s")
        self.respawn_at = time.monotonic() + delay

    def note_recycle_requests(self) -> None:
        """Notes the workers that asked to be recycled since the last look."""
        for pid, reason in self.control.recycle_requests():
            for w in self.workers:
                if w.pid == pid and not w.retiring and w.recycle_due is None:
                    w.recycle_due = (reason, 0.0)

    def recycle_due_workers(self) -> None:
        """Replaces each worker due for recycling: its replacement first; only once that one
        serves does the old one stop taking connections and drain. One log line each."""
        now = time.monotonic()
        for w in list(self.workers):
            if w.recycle_due is None or w.retiring or now < w.recycle_due[1]:
                continue
            if self.stop_asked:
                return
            reason = w.recycle_due[0]
            batch = self.start_generation(1)
            if isinstance(batch, int):
                delay = self.backoff.failed()
                log(
                    f"worker {w.pid} is due for recycling ({reason}) but its replacement did"
                    f" not start (exit code {batch}); it keeps serving, trying again in"
                    f" {delay:.1f} s"
                )
                w.recycle_due = (reason, time.monotonic() + delay)
                continue
            self.workers.extend(batch)
            w.retire()
            log(f"worker {w.pid} recycled: {reason}; worker {batch[0].pid} serves in its place")

    def reload(self, reason: str) -> None:
        log(f"reloading ({reason})")
        batch = self.start_generation(self.count)
        if isinstance(batch, int):
            log(
                f"reload failed: the new app did not start (exit code {batch});"
                " old workers keep serving"
            )
            return
        old = [w for w in self.workers if not w.retiring]
        self.workers.extend(batch)
        for w in old:
            w.retire()
        pids = ", ".join(str(w.pid) for w in batch)
        log(f"reloaded: workers {pids} serving; {plural(len(old), 'old worker')} draining")

    # -- stopping ---------------------------------------------------------------------------
    def shutdown(self) -> int:
        # Said at once: draining can take up to the graceful timeout.
        log(
            f"stopping: in-flight requests get up to {self.graceful_timeout:g} s to finish;"
            " press Ctrl-C again (or send SIGTERM) to stop at once"
        )
        # Refuse new connections at once; the workers finish what they have.
        self.listeners.close()
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        if not self.drained():
            log("stopped at once: requests still running were cut off")
            return 1
        log("stopped")
        return 0

    def drained(self) -> bool:
        """Waits for the workers to end; False when they were killed first, asked twice or
        past the graceful timeout (and some to spare)."""
        seen = self.signals_seen
        deadline = time.monotonic() + self.graceful_timeout + 5
        forced = False
        while any(w.proc.poll() is None for w in self.workers):
            if self.signals_seen > seen or time.monotonic() > deadline:
                forced = True
                for w in self.workers:
                    if w.proc.poll() is None:
                        w.proc.kill()
                break
            time.sleep(0.05)
        for w in self.workers:
            w.proc.wait()
        return not forced
