"""Starting worker processes and waiting until they serve: the supervisor's side of a
worker's start (the worker's own is worker.py; what the two say, protocol.py). A worker
that has not said it serves is never counted on, so a broken app cannot replace a working
one."""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from bartizan import logs, protocol
from bartizan.protocol import WorkerConfig

READY_TIMEOUT = 120.0


class Worker:
    """A worker process, as the supervisor keeps track of it."""

    def __init__(self, proc: subprocess.Popen, ready_r: int) -> None:
        self.proc = proc
        self.ready_r = ready_r
        self.started = time.monotonic()
        # What it said it serves when ready ({} when it was not asked to say).
        self.served: dict | None = None
        self.retiring = False
        # Asked to be recycled (why), and when to try again if its replacement failed.
        self.recycle_due: tuple[str, float] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def retire(self) -> None:
        """It stops taking connections, answers what it has and ends."""
        self.retiring = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)


def spawn(config: WorkerConfig, describe: bool = False) -> Worker:
    """A worker process on the sockets of ``config``. With ``describe``, it says what it
    serves when ready: asked of one worker at start, since counting a large media tree is
    work no other start needs."""
    ready_r, ready_w = os.pipe()
    config = dataclasses.replace(config, ready_fd=ready_w, describe=describe)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bartizan.worker"],
        env=dict(os.environ, **config.to_env()),
        pass_fds=[*config.listen_fds, ready_w, config.control_fd],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(ready_w)
    logs.relay(proc.stderr)
    return Worker(proc, ready_r)


def wait_ready(batch: list[Worker], give_up: Callable[[], bool]) -> list[tuple[Worker, int]] | None:
    """Waits until each worker in ``batch`` serves or has failed; returns the failed ones
    with their exit codes. None when ``give_up()`` says so meanwhile, or when one takes too
    long."""
    pending = {w.ready_r: w for w in batch}
    failed = []
    deadline = time.monotonic() + READY_TIMEOUT
    while pending:
        left = deadline - time.monotonic()
        if give_up() or left <= 0:
            return None
        readable, _, _ = select.select(list(pending), [], [], min(left, 0.2))
        for fd in readable:
            worker = pending.pop(fd)
            worker.served = protocol.read_ready(fd)
            if worker.served is None:
                failed.append((worker, worker.proc.wait()))
    return failed


def kill(batch: list[Worker]) -> None:
    for w in batch:
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait()
