"""Fixtures that start the real server (`python -m bartizan ...`) on a
loopback port and stop its whole process group afterwards."""

import pytest

from tests.support import ServerProcess


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
