"""Fixtures that start the real server (`python -m bartizan ...`) on a
loopback port and stop its whole process group afterwards."""

import faulthandler
import os
import sys
import threading

import pytest

from tests.support import LIVE, ServerProcess

# Every wait in the tests has its own timeout; this is the backstop for a
# call that can't take one (e.g. an embedded Server.stop() that never
# returns): after this long, dump all stacks, kill the servers, exit.
TEST_HANG_LIMIT = 120


def _hang_watchdog(nodeid):
    sys.stderr.write(f"\n*** {nodeid} still running after {TEST_HANG_LIMIT} s: aborting the run\n")
    faulthandler.dump_traceback(all_threads=True)
    for proc in list(LIVE):
        proc.stop()
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

    def __call__(self, *args, env=None, python_args=(), wait=True, module_args=("-m", "bartizan")):
        """Start the server with CLI args; returns a ServerProcess whose
        `.url` is the base URL parsed from the start line.

        `--port 0` is added unless a port or bind is given, so parallel runs
        never collide. With wait=False the caller handles startup (used for
        the user-error exit tests)."""
        args = list(args)
        if not any(a in ("--port", "--bind") or a.startswith(("--port=", "--bind=")) for a in args):
            args += ["--port", "0"]
        proc = ServerProcess(args, env=env, python_args=python_args, module_args=module_args)
        self.started.append(proc)
        if wait:
            proc.wait_started()
        return proc

    def stop_all(self):
        for proc in self.started:
            proc.stop()


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
