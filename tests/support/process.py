"""The server under test as a real process: starting it in its own process
group, reading its start line and log, stopping it, measuring it, and the
bounded waits the tests make on it.

Every blocking operation here has a timeout: a misbehaving server makes a
test fail, never hang.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.procfs import rss_kib, tree_pids

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable

# Generous: the demo site imports Django before the server starts listening.
START_TIMEOUT = 30.0

START_LINE_RE = re.compile(
    r"^bartizan: listening on (?P<urls>https?://\S+(?:, https?://\S+)*) "
    r"\(threads: (?P<threads>\d+)\)$"
)
# The same line as the `cli` fixture accepts it: with more than one worker it
# names the count.
WORKERS_START_LINE_RE = re.compile(
    r"^bartizan: listening on (?P<urls>https?://\S+) "
    r"\(threads: (?P<threads>\d+)(?:, workers: (?P<workers>\d+))?\)$"
)
PROXY_LINE_RE = re.compile(
    r"^bartizan: proxy listening on (?P<urls>https?://\S+(?:, https?://\S+)*) -> (?P<ups>[^\s;]+(?:, [^\s;]+)*)(?:; \S+ -> \S+)*$"
)
METRICS_LINE_RE = re.compile(r"^bartizan: metrics on (?P<url>http://\S+)$")


class ServerStartError(AssertionError):
    pass


# The server's log format: `2026-12-02T00:30:42.123456Z  INFO message`.
LOG_PREFIX_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z +[A-Z]+ ")


def _pump(stream, lines, cond, raw_lines=None):
    """Read a child pipe line by line so it never fills and blocks the child. Lines are kept
    without the log's timestamp and level (the tests match what a line says); `raw_lines`, if
    given, keeps them whole."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        with cond:
            if raw_lines is not None:
                raw_lines.append(text)
            lines.append(LOG_PREFIX_RE.sub("", text, count=1))
            cond.notify_all()
    stream.close()
    with cond:
        lines.append(None)  # EOF marker
        cond.notify_all()


def _die_with_parent():
    """Runs in the child before exec: if the test process dies (even by
    SIGKILL), the kernel kills the child too, so none outlives a run."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


# Every child started and not yet stopped, for the hang watchdog.
LIVE = set()


def _as_fd3(fd):
    os.dup2(fd, 3)
    _die_with_parent()


def split_url(url):
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _nth_match(pattern, lines, count):
    matches = [m for m in (pattern.search(line) for line in lines) if m]
    return matches[count - 1] if len(matches) >= count else None


class ChildProcess:
    """A command in its own process group, its stdout and stderr read line by
    line on threads.

    The process group lets teardown stop the command and anything it spawned
    with one signal addressed by id.
    """

    def __init__(self, argv, env=None, cwd=ROOT, fd3=None):
        """`fd3`: a socket the command inherits as descriptor 3, as systemd hands over the
        first socket of a socket unit."""
        # Hermetic: the options a test means come from its own flags and env, never from the
        # shell that runs the suite.
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BARTIZAN_") and k not in ("PORT", "WEB_CONCURRENCY")
        }
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self.args = list(argv)
        self.proc = subprocess.Popen(
            self.args,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent if fd3 is None else lambda: _as_fd3(fd3),
            pass_fds=() if fd3 is None else tuple(sorted({3, fd3})),
        )
        self.pid = self.proc.pid
        LIVE.add(self)
        self._cond = threading.Condition()
        self._stderr = []
        self._stderr_raw = []
        self._stdout = []
        self._threads = [
            threading.Thread(
                target=_pump,
                args=(self.proc.stderr, self._stderr, self._cond, self._stderr_raw),
                daemon=True,
            ),
            threading.Thread(
                target=_pump, args=(self.proc.stdout, self._stdout, self._cond), daemon=True
            ),
        ]
        for t in self._threads:
            t.start()

    # -- output -------------------------------------------------------
    def stderr_lines(self):
        with self._cond:
            return [line for line in self._stderr if line is not None]

    def stderr_raw_lines(self):
        """Stderr lines as written, with their timestamp and level."""
        with self._cond:
            return list(self._stderr_raw)

    def stderr_text(self):
        return "\n".join(self.stderr_lines())

    def stdout_text(self):
        with self._cond:
            return "\n".join(line for line in self._stdout if line is not None)

    def _wait_stderr(self, find, timeout, while_running=False):
        """Wait until find(stderr lines) is not None and return it; None once
        the timeout passes or stderr is closed (nothing more can come), or
        with `while_running` once the process has exited."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = find([line for line in self._stderr if line is not None])
                if found is not None:
                    return found
                if None in self._stderr or (while_running and self.proc.poll() is not None):
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.2))

    def stderr_match(self, pattern, timeout, count=1):
        """The `count`-th stderr line matching `pattern` (a compiled regex,
        searched), waiting at most `timeout` seconds; None if it did not come."""
        return self._wait_stderr(lambda lines: _nth_match(pattern, lines, count), timeout)

    # -- lifecycle ----------------------------------------------------
    def wait_exit(self, timeout):
        """Return the exit code, or raise subprocess.TimeoutExpired."""
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=2)
        return rc

    def outcome(self, timeout=20):
        """(exit code, stderr) of a run that is expected to end; a test failure if it
        goes on."""
        try:
            rc = self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            import pytest

            pytest.fail(f"did not exit within {timeout} s; stderr:\n{self.stderr_text()}")
        return rc, self.stderr_text()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        LIVE.discard(self)
        if self.proc.poll() is None:
            signal_group(self.pid, signal.SIGTERM)
            self._wait_quietly(5)
        # Anything left in the group (the child ignored SIGTERM, or a child of
        # it outlived it) is killed outright.
        signal_group(self.pid, signal.SIGKILL)
        self._wait_quietly(5)
        for t in self._threads:
            t.join(timeout=2)

    def _wait_quietly(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    # -- measurements -------------------------------------------------
    def rss_kb(self):
        return rss_kb(self.pid)


class ServerProcess(ChildProcess):
    """`python -m bartizan ARGS`; once started, `.url` (and `.host`, `.port`)
    come from its start line."""

    def __init__(self, args, env=None, python_args=(), cwd=ROOT, module_args=("-m", "bartizan")):
        super().__init__([PYTHON, *python_args, *module_args, *args], env=env, cwd=cwd)
        self.start_line = None
        self.urls = []
        self.threads = None
        self.declared_workers = None

    def _wait_start_line(self, prefix, pattern, name, timeout):
        """The first stderr line starting with `prefix`, matched against
        `pattern`; sets start_line and urls. Stops the process and raises
        ServerStartError if it does not come or is malformed."""

        def first(lines):
            return next((line for line in lines if line.startswith(prefix)), None)

        line = self._wait_stderr(first, timeout, while_running=True)
        if line is None:
            self.stop()
            raise ServerStartError(
                f"{name} did not report listening within {timeout}s "
                f"(exit code {self.proc.returncode}); stderr:\n{self.stderr_text()}"
            )
        m = pattern.match(line)
        if not m:
            self.stop()
            raise ServerStartError(f"malformed {name} start line: {line!r}")
        self.start_line = line
        self.urls = m.group("urls").split(", ")
        return m

    def wait_started(self, timeout=START_TIMEOUT, pattern=START_LINE_RE):
        """Wait for the start line and parse the listening URL(s), the thread
        count and, if `pattern` has it, the worker count from it."""
        m = self._wait_start_line("bartizan: listening on", pattern, "server", timeout)
        self.threads = int(m.group("threads"))
        workers = m.groupdict().get("workers")
        self.declared_workers = int(workers) if workers else None
        return self

    def wait_proxy_started(self, timeout=START_TIMEOUT):
        """Wait for the reverse proxy's start line; parse its URL(s) and
        upstreams from it."""
        m = self._wait_start_line("bartizan: proxy listening on", PROXY_LINE_RE, "proxy", timeout)
        self.upstreams = m.group("ups").split(", ")
        return self

    # -- addresses ----------------------------------------------------
    @property
    def url(self):
        return self.urls[0]

    @property
    def host(self):
        return split_url(self.url)[0]

    @property
    def port(self):
        return split_url(self.url)[1]

    def __str__(self):
        return self.url


def wait_line(proc, pattern, timeout, count=1):
    """The `count`-th stderr line matching `pattern` (a compiled regex), waiting
    at most `timeout` seconds; fails with the whole stderr otherwise."""
    m = proc.stderr_match(pattern, timeout, count)
    if m is None:
        raise AssertionError(
            f"no{'' if count == 1 else f' {count} lines'} matching {pattern.pattern!r} "
            f"within {timeout} s "
            f"(exit code {proc.proc.poll()}); stderr:\n{proc.stderr_text()}"
        )
    return m


def signal_group(pgid, sig):
    """Signals a process group that may already be gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_now(proc):
    """SIGKILL the server's whole process group: no graceful anything."""
    signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server {proc.pid} still alive 5 s after SIGKILL") from None
    LIVE.discard(proc)


# ---------------------------------------------------------------------------
# Processes below the server, and their memory
# ---------------------------------------------------------------------------


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def alive(pid):
    s = _state(pid)
    return s is not None and s not in ("Z", "X")


def worker_pids(proc):
    """Live processes below the master (zombies not yet reaped excluded)."""
    return sorted(p for p in tree_pids(proc.pid) if p != proc.pid and alive(p))


def rss_kb(pid):
    """Resident memory of the server: the process and its workers together."""
    sizes = [kib for kib in map(rss_kib, tree_pids(pid)) if kib is not None]
    if not sizes:
        raise AssertionError(f"no VmRSS for pid {pid}")
    return sum(sizes)


class RssSampler:
    """Samples a process's resident set size in a thread; records the peak."""

    def __init__(self, pid, interval=0.02):
        self.pid = pid
        self.interval = interval
        self.baseline = rss_kb(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kb(self.pid))
            except (OSError, AssertionError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.peak = max(self.peak, rss_kb(self.pid))
        except (OSError, AssertionError):
            pass

    @property
    def growth_mb(self):
        return (self.peak - self.baseline) / 1024.0


# ---------------------------------------------------------------------------
# Bounded waits, a result from another thread, ports
# ---------------------------------------------------------------------------


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    return predicate()


def in_thread(fn):
    """Run fn() on a daemon thread; returns (thread, result dict)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # reported by the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def read_marker_file(path, timeout):
    """Wait (bounded) for a marker file written by an app in the server
    process; its text, or None if it never appeared."""
    if not wait_for(lambda: os.path.exists(path), timeout):
        return None
    with open(path) as f:
        return f.read()


def port_refuses(port, host="127.0.0.1", timeout=2.0):
    """True if a TCP connect to the port is refused (nothing listening)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()
    return False


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port
