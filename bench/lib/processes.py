"""Server processes: the environment they run in, starting and stopping them, waiting
until they answer, and the peak RSS of their process trees.

Every server runs in its own process group so that the whole tree (arbiters,
workers) can be stopped together.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from lib import HOST, ROOT, log

from tests.support.procfs import rss_kib, tree_pids

# --------------------------------------------------------------------------
# Environment shared by every server and the in-process loop.

_TMP = None  # scratch dir for the whole run, removed at exit


def scratch():
    global _TMP
    if _TMP is None:
        _TMP = Path(tempfile.mkdtemp(prefix="bartizan-bench-"))
    return _TMP


def remove_scratch():
    if _TMP is not None:
        shutil.rmtree(_TMP, ignore_errors=True)


def server_env():
    env = os.environ.copy()
    # Repo root so `bench.apps.hello` imports; python/ last so a bartizan
    # installed into the venv wins over the bare source tree.
    extra = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), extra, str(ROOT / "python")) if p)
    # The demo site writes its SQLite DB and media here, not in $HOME.
    env["BARTIZAN_DEMO_DB"] = str(scratch() / "demo.sqlite3")
    env["BARTIZAN_DEMO_MEDIA"] = str(scratch() / "media")
    env.pop("DJANGO_SETTINGS_MODULE", None)  # wsgi.py must pick the demo's
    return env


# --------------------------------------------------------------------------
# Starting and stopping.

_RUNNING = {}  # pid -> Popen of servers still to be stopped


class ServerFailed(Exception):
    pass


def start_server(argv, log_path):
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _RUNNING[proc.pid] = proc
    return proc


def stop_server(proc, sig=signal.SIGTERM, patience=10.0):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} ignored signal {sig}; killing its group")
    # Workers may outlive their parent; take the whole group down.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    _RUNNING.pop(proc.pid, None)


def stop_all():
    for proc in list(_RUNNING.values()):
        stop_server(proc, patience=5.0)


def log_tail(path, lines=15):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# Readiness.


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_get(port, path, timeout=5.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def wait_ready(proc, port, path, check, log_path, timeout):
    """Poll until the server answers `path` correctly; fail if it exits."""
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(
                f"exited with code {proc.returncode} before serving\n{log_tail(log_path)}"
            )
        try:
            status, body, headers = http_get(port, path)
        except OSError as exc:  # not listening yet
            problem = str(exc)
        else:
            if check(status, body, headers):
                return
            problem = (
                f"HTTP {status}, Content-Length {headers.get('Content-Length')}, "
                f"{len(body)} bytes: {body[:200]!r}"
            )
        time.sleep(0.1)
    raise ServerFailed(f"not ready after {timeout:.0f}s ({problem})\n{log_tail(log_path)}")


# --------------------------------------------------------------------------
# Peak RSS of a process tree, sampled from /proc.


class RssSampler(threading.Thread):
    """Sum of VmRSS over the tree every `interval` s; keeps the maximum."""

    def __init__(self, root_pid, interval=0.1):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def sample(self):
        total = sum(rss_kib(pid) or 0 for pid in tree_pids(self.root_pid))
        self.peak_kib = max(self.peak_kib, total)

    def run(self):
        self.sample()
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self):
        self._stop_event.set()
        self.join()
        self.sample()
