"""The CLI's master process: owns the listening sockets and runs worker processes on them.

The sockets are opened once, here, and handed to every worker, so a port is never closed
while the server runs: workers come and go (a crash, a reload) without a refused
connection. The master runs no app code and no server threads of its own.

- A worker that dies is restarted with backoff, and says so in a log line.
- SIGHUP (or a changed ``.py`` file with ``--reload``): a new set of workers imports the
  app afresh; once all of them are serving, the old ones retire (they answer what they have
  and close each connection after its next response). If the new app fails to start, the
  old workers keep serving and the reason is logged.
- SIGTERM / SIGINT: every worker stops taking connections and finishes its in-flight
  requests within the graceful timeout; a second signal ends them at once.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from bartizan import _bartizan, logs, metrics

READY_TIMEOUT = 120.0
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# A worker that lived this long was healthy: its next crash starts the backoff afresh.
BACKOFF_RESET_AFTER = 60.0
RELOAD_POLL = 1.0
RELOAD_DEBOUNCE = 0.5


def log(message: str, level: str = "INFO") -> None:
    logs.log(message, level)


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


def ended(code: int) -> str:
    """How a worker's process ended, as a person would say it."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def split_bind(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"--bind {addr!r}: expected HOST:PORT")
    return host, int(port)


class Worker:
    def __init__(self, proc: subprocess.Popen, ready_r: int) -> None:
        self.proc = proc
        self.ready_r = ready_r
        self.started = time.monotonic()
        self.retiring = False
        # Asked to be recycled (why), and when to try again if its replacement failed.
        self.recycle_due: tuple[str, float] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    def __init__(
        self,
        worker_config: dict,
        binds: list[str],
        workers: int,
        threads: int,
        graceful_timeout: float,
        reload: bool = False,
        metrics: str | None = None,
        demo: bool = False,
        fds: list[int] | None = None,
    ) -> None:
        self.worker_config = worker_config
        self.demo = demo
        # What the first worker said it serves (mounts, warnings), told once at start.
        self.served: dict | None = None
        self.binds = binds
        self.fds = fds or []
        self.count = workers
        self.threads = threads
        self.graceful_timeout = graceful_timeout
        self.reload_on_change = reload
        self.metrics_addr = metrics
        self.sockets: list[socket.socket] = []
        # The unix socket files it made, removed when it ends.
        self.socket_files: list[str] = []
        self.workers: list[Worker] = []
        self.signals: list[int] = []
        self.backoff = BACKOFF_START
        self.respawn_at = 0.0
        # Where the workers write their samples; made when metrics are served.
        self.metrics_dir: str | None = None
        # Workers ask here to be recycled: one line each, "recycle PID REASON".
        self.control_r, self.control_w = os.pipe()
        os.set_blocking(self.control_r, False)
        self.control_buf = b""

    # -- workers ----------------------------------------------------------------------------
    def spawn(self, describe: bool = False) -> Worker:
        """A worker process on the sockets. With `describe`, it says what it serves (its
        mounts, counted, and warnings) when ready: asked of one worker at start, since
        counting a large media tree is work no other start needs."""
        ready_r, ready_w = os.pipe()
        fds = [s.fileno() for s in self.sockets]
        config = dict(
            self.worker_config,
            listen_fds=fds,
            ready_fd=ready_w,
            control_fd=self.control_w,
            metrics_dir=self.metrics_dir,
            master_pid=os.getpid(),
            multiprocess=self.count > 1,
            describe=describe,
        )
        env = dict(os.environ, BARTIZAN_WORKER_CONFIG=json.dumps(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bartizan.worker"],
            env=env,
            pass_fds=[*fds, ready_w, self.control_w],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(ready_w)
        logs.relay(proc.stderr)
        return Worker(proc, ready_r)

    def wait_ready(self, batch: list[Worker]) -> list[tuple[Worker, int]] | None:
        """Waits until each worker in ``batch`` serves or has failed; returns the failed ones
        with their exit codes. None when asked to stop meanwhile, or when one takes too long."""
        pending = {w.ready_r: w for w in batch}
        failed = []
        deadline = time.monotonic() + READY_TIMEOUT
        while pending:
            if len(self.signals) and signal.SIGHUP not in self.signals:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select(list(pending), [], [], min(left, 0.2))
            for fd in readable:
                data = _read_all(fd)
                worker = pending.pop(fd)
                os.close(fd)
                if not data.startswith(b"ok"):
                    failed.append((worker, worker.proc.wait()))
                elif data[2:].strip():
                    try:
                        self.served = json.loads(data[2:])
                    except ValueError:
                        self.served = {}
        return failed

    @staticmethod
    def stop_batch(batch: list[Worker]) -> None:
        for w in batch:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait()

    def start_generation(self, n: int) -> list[Worker] | int:
        """``n`` new workers, all serving; or the exit code of one that failed."""
        batch = [self.spawn() for _ in range(n)]
        failed = self.wait_ready(batch)
        if failed == []:
            return batch
        self.stop_batch(batch)
        return failed[0][1] if failed else 1

    def start_first(self) -> int | None:
        """The first workers. An app that cannot start ends the server (its worker has said
        why, in one line): exit code 2. A worker that dies otherwise while starting (killed
        by the OOM killer or an operator) is replaced like any that dies later."""
        batch = [self.spawn(describe=i == 0) for i in range(self.count)]
        failed = self.wait_ready(batch)
        if failed is None:
            self.stop_batch(batch)
            return 1
        if any(code == 2 for _, code in failed):
            self.stop_batch(batch)
            return 2
        for w, code in failed:
            batch.remove(w)
            self.respawn_at = time.monotonic() + self.backoff
            log(
                f"worker {w.pid} {ended(code)} while starting; starting another in "
                f"{self.backoff:.1f} s"
            )
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.workers = batch
        return None

    def retire(self, old: list[Worker]) -> None:
        for w in old:
            w.retiring = True
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGUSR1)

    def reap(self) -> None:
        """Notes workers that died, and starts replacements when their backoff allows."""
        now = time.monotonic()
        for w in list(self.workers):
            code = w.proc.poll()
            if code is None:
                continue
            self.workers.remove(w)
            if w.retiring:
                continue
            if now - w.started > BACKOFF_RESET_AFTER:
                self.backoff = BACKOFF_START
            self.respawn_at = now + self.backoff
            log(f"worker {w.pid} {ended(code)}; starting another in {self.backoff:.1f} s")
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        missing = self.count - sum(1 for w in self.workers if not w.retiring)
        if missing <= 0 or now < self.respawn_at or self.stopping():
            return
        replacement = self.start_generation(1)
        if isinstance(replacement, list):
            self.workers.extend(replacement)
            log(f"worker {replacement[0].pid} started")
        else:
            # The app no longer starts (say, a broken deploy): keep trying, ever slower.
            log(
                f"a new worker did not start (exit code {replacement});"
                f" trying again in {self.backoff:.1f} s"
            )
            self.respawn_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    # -- recycling --------------------------------------------------------------------------
    def read_recycle_requests(self) -> None:
        """Notes the workers that asked to be recycled since the last look."""
        try:
            while chunk := os.read(self.control_r, 4096):
                self.control_buf += chunk
        except BlockingIOError:
            pass
        *lines, self.control_buf = self.control_buf.split(b"\n")
        for line in lines:
            word, _, rest = line.decode(errors="replace").partition(" ")
            pid, _, reason = rest.partition(" ")
            if word != "recycle" or not pid.isdigit():
                continue
            for w in self.workers:
                if w.pid == int(pid) and not w.retiring and w.recycle_due is None:
                    w.recycle_due = (reason, 0.0)

    def recycle_due_workers(self) -> None:
        """Replaces each worker due for recycling: its replacement first; only once that one
        serves does the old one stop taking connections and drain. One log line each."""
        now = time.monotonic()
        for w in list(self.workers):
            if w.recycle_due is None or w.retiring or now < w.recycle_due[1]:
                continue
            if self.stopping():
                return
            reason = w.recycle_due[0]
            batch = self.start_generation(1)
            if isinstance(batch, int):
                log(
                    f"worker {w.pid} is due for recycling ({reason}) but its replacement did"
                    f" not start (exit code {batch}); it keeps serving, trying again in"
                    f" {self.backoff:.1f} s"
                )
                w.recycle_due = (reason, time.monotonic() + self.backoff)
                self.backoff = min(self.backoff * 2, BACKOFF_MAX)
                continue
            self.workers.extend(batch)
            self.retire([w])
            log(f"worker {w.pid} recycled: {reason}; worker {batch[0].pid} serves in its place")

    # -- reload -----------------------------------------------------------------------------
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
        self.retire(old)
        pids = ", ".join(str(w.pid) for w in batch)
        log(f"reloaded: workers {pids} serving; {plural(len(old), 'old worker')} draining")

    def source_mtimes(self) -> dict[str, float]:
        found = {}
        for root, dirs, files in os.walk(os.getcwd()):
            dirs[:] = [
                d
                for d in dirs
                if not d.startswith(".") and d not in ("__pycache__", "node_modules", "target")
            ]
            for f in files:
                if f.endswith(".py"):
                    p = os.path.join(root, f)
                    try:
                        found[p] = os.stat(p).st_mtime
                    except OSError:
                        pass
        return found

    # -- signals ----------------------------------------------------------------------------
    def on_signal(self, signum: int, frame: object) -> None:
        # Only record: the main loop acts. Locks in a handler can deadlock the interrupted frame.
        self.signals.append(signum)

    def stopping(self) -> bool:
        return any(s in (signal.SIGTERM, signal.SIGINT) for s in self.signals)

    # -- metrics ----------------------------------------------------------------------------
    def metrics_text(self) -> str:
        return metrics.render(self.metrics_dir, [w.pid for w in self.workers])

    def serve_metrics(self) -> None:
        host, port = split_bind(self.metrics_addr)
        self.metrics_dir = tempfile.mkdtemp(prefix="bartizan-metrics-")
        self.metrics_port = metrics.serve(host, port, self.metrics_text).server_address[1]

    # -- the main loop ----------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self.serve()
        finally:
            # On every way out, a failed start too: the directory must not outlive the server.
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
            for path in self.socket_files:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def serve(self) -> int:
        try:
            for fd in self.fds:
                self.sockets.append(adopt_listener(fd))
            for b in self.binds:
                self.sockets.extend(open_listeners(b))
                if b.startswith("unix:"):
                    self.socket_files.append(b[len("unix:") :])
        except (OSError, ValueError) as e:
            # An address in use or unknown is the user's to fix, like a bad value.
            log(str(e))
            return 2
        if self.metrics_addr:
            try:
                self.serve_metrics()
            except (OSError, ValueError) as e:
                log(f"cannot serve metrics on {self.metrics_addr}: {e}")
                return 1
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        failed = self.start_first()
        if failed is not None:
            return failed
        urls = ", ".join(url_of(s) for s in self.sockets)
        extra = f", workers: {self.count}" if self.count > 1 else ""
        log(f"listening on {urls} (threads: {self.threads}{extra})")
        self.announce()
        if self.metrics_addr:
            host = self.metrics_addr.rsplit(":", 1)[0]
            log(f"metrics on http://{host}:{self.metrics_port}/metrics")
        mtimes = self.source_mtimes() if self.reload_on_change else {}
        next_scan = time.monotonic() + RELOAD_POLL
        while not self.stopping():
            if signal.SIGHUP in self.signals:
                self.signals = [s for s in self.signals if s != signal.SIGHUP]
                self.reload("SIGHUP")
            if self.reload_on_change and time.monotonic() >= next_scan:
                now = self.source_mtimes()
                if now != mtimes:
                    # Debounce: editors save in bursts.
                    time.sleep(RELOAD_DEBOUNCE)
                    now = self.source_mtimes()
                    changed = sorted(
                        p for p in now.keys() | mtimes.keys() if now.get(p) != mtimes.get(p)
                    )
                    mtimes = now
                    shown = os.path.relpath(changed[0]) if changed else "a file"
                    more = f" and {plural(len(changed) - 1, 'other')}" if len(changed) > 1 else ""
                    self.reload(f"{shown}{more} changed")
                next_scan = time.monotonic() + RELOAD_POLL
            self.reap()
            self.read_recycle_requests()
            self.recycle_due_workers()
            time.sleep(0.05)
        return self.shutdown()

    def announce(self) -> None:
        """What runs: the app, each static mount, what --reload watches, and any warning."""
        app = self.worker_config["app"]
        log(f"serving the bundled demo site ({app})" if self.demo else f"serving {app}")
        served = self.served or {}
        for prefix, directory, files, kind in served.get("mounts", []):
            log(f"{kind} {prefix}/ from {directory} ({plural(files, 'file')})")
        if self.reload_on_change:
            log(f"reloading when a .py file under {os.getcwd()} changes")
        for warning in served.get("warnings", []):
            log(f"warning: {warning}", "WARN")

    def shutdown(self) -> int:
        # Said at once: draining can take up to the graceful timeout.
        log(
            f"stopping: in-flight requests get up to {self.graceful_timeout:g} s to finish;"
            " press Ctrl-C again (or send SIGTERM) to stop at once"
        )
        # Refuse new connections at once; the workers finish what they have.
        for s in self.sockets:
            s.close()
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        seen = len(self.signals)
        deadline = time.monotonic() + self.graceful_timeout + 5
        forced = False
        while any(w.proc.poll() is None for w in self.workers):
            if len(self.signals) > seen or time.monotonic() > deadline:
                # Asked twice, or past the deadline: now.
                forced = True
                for w in self.workers:
                    if w.proc.poll() is None:
                        w.proc.kill()
                break
            time.sleep(0.05)
        for w in self.workers:
            w.proc.wait()
        if forced:
            log("stopped at once: requests still running were cut off")
            return 1
        log("stopped")
        return 0


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _read_all(fd: int) -> bytes:
    """What a worker wrote on its ready pipe, up to its close."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def url_of(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
