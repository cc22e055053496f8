"""Fixtures that start the real server (`python -m bartizan ...`) on a
loopback port and stop its whole process group afterwards."""

import faulthandler
import os
import re
import shutil
import sys
import threading

import pytest

from tests.support import ChildProcess, evennia_game
from tests.support.cdp import CDP
from tests.support.process import (
    LIVE,
    METRICS_LINE_RE,
    ROOT,
    WORKERS_START_LINE_RE,
    ServerProcess,
    wait_line,
)

# Every wait in the tests has its own timeout; this is the backstop for a
# call that can't take one (e.g. an embedded Server.stop() that never
# returns): after this long, dump all stacks, kill the servers, exit.
TEST_HANG_LIMIT = 120

BROWSER_WAIT = 30  # bound on every browser wait, in seconds
DEVTOOLS_RE = re.compile(r"DevTools listening on (ws://\S+)")
CHROMIUM = shutil.which("chromium")


def _hang_watchdog(nodeid):
    sys.stderr.write(f"\n*** {nodeid} still running after {TEST_HANG_LIMIT} s: aborting the run\n")
    faulthandler.dump_traceback(all_threads=True)
    for proc in list(LIVE):
        proc.stop()
    evennia_game.kill_all()
    os._exit(3)


@pytest.fixture(autouse=True)
def _bounded_test(request):
    timer = threading.Timer(TEST_HANG_LIMIT, _hang_watchdog, args=(request.node.nodeid,))
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


class _Launcher:
    def __init__(self):
        self.started = []

    def __call__(
        self,
        *args,
        env=None,
        cwd=ROOT,
        python_args=(),
        wait=True,
        module_args=("-m", "bartizan"),
    ):
        """Start the server with CLI args; returns a ServerProcess whose
        `.url` is the base URL parsed from the start line.

        `--port 0` is added unless a port or bind is given, so parallel runs
        never collide. With wait=False the caller handles startup (used for
        the user-error exit tests and the proxy's own start line)."""
        args = list(args)
        if not any(a in ("--port", "--bind") or a.startswith(("--port=", "--bind=")) for a in args):
            args += ["--port", "0"]
        proc = ServerProcess(
            args, env=env, python_args=python_args, cwd=cwd, module_args=module_args
        )
        self.started.append(proc)
        if wait:
            proc.wait_started()
        return proc

    def stop_all(self):
        for proc in self.started:
            proc.stop()


class _CliLauncher(_Launcher):
    """The CLI as the lifecycle and logging tests run it: the start line may
    name a worker count (`.declared_workers`), and with --metrics the
    metrics address is read too (`.metrics_url`)."""

    def __call__(self, *args, env=None, cwd=ROOT):
        proc = super().__call__(*args, env=env, cwd=cwd, wait=False)
        proc.wait_started(pattern=WORKERS_START_LINE_RE)
        proc.metrics_url = None
        if "--metrics" in args:
            proc.metrics_url = wait_line(proc, METRICS_LINE_RE, 10).group("url")
        return proc


@pytest.fixture
def server():
    """Factory: server("tests.apps.echo:app", "--threads", "2") -> ServerProcess."""
    launcher = _Launcher()
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def module_server():
    """Same as `server`, but the processes live for the whole test module,
    so table-driven tests share one server instead of starting dozens."""
    launcher = _Launcher()
    yield launcher
    launcher.stop_all()


@pytest.fixture
def cli():
    """Factory like `server` for tests of the master and its workers:
    cli(LIFECYCLE, "--workers", "2") -> ServerProcess."""
    launcher = _CliLauncher()
    yield launcher
    launcher.stop_all()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium in its own process group; yields a CDP connection to
    the browser target. The DevTools address is read from stderr."""
    if CHROMIUM is None:
        pytest.skip(
            "no `chromium` on PATH (install Debian's chromium package to run the browser test)"
        )
    profile = tmp_path / "profile"
    profile.mkdir()
    proc = ChildProcess(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--no-proxy-server",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
    )
    cdp = None
    try:
        m = proc.stderr_match(DEVTOOLS_RE, BROWSER_WAIT)
        assert m, "chromium did not report a DevTools address; stderr:\n" + "\n".join(
            proc.stderr_lines()[-30:]
        )
        cdp = CDP(m.group(1), timeout=BROWSER_WAIT)
        yield cdp
    finally:
        if cdp:
            cdp.close()
        proc.stop()
