"""What the supervisor and its worker processes say to each other, written and read here
only, so that the two sides cannot drift apart.

- The config: a worker starts with a ``WorkerConfig``, as JSON in its environment.
- Ready: a worker that serves writes one line on its ready pipe, ``ok`` and, when it was
  asked to describe what it serves, that as JSON; then it closes the pipe. A worker that
  cannot start closes it having written nothing and exits, with ``APP_FAILED`` when the app
  is at fault.
- Recycle: a worker due for recycling writes ``recycle PID REASON`` on the control pipe that
  all workers share; the supervisor starts its replacement, then retires it (SIGUSR1).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

ENV = "BARTIZAN_WORKER_CONFIG"
# A worker's exit code when the app cannot start: the user's to fix, so the server ends with
# it too, where a worker killed while starting would be replaced.
APP_FAILED = 2


@dataclass
class WorkerConfig:
    """What a worker process is started with. The CLI fills in the app's part
    (``cli.worker_config``); the supervisor the part below, for each worker it starts."""

    app: str
    factory: bool
    # "on", "off" or "auto": see cli.django_mode.
    django: str
    graceful_timeout: float
    pythonpath: list[str]
    log_level: str
    check: bool
    # worker.Recycler's arguments.
    recycle: dict[str, int]
    # bartizan.Server's keyword arguments, but where to listen; the worker adds the static
    # and media roots of a Django project to those given here.
    server: dict[str, Any]

    listen_fds: list[int] = field(default_factory=list)
    ready_fd: int = -1
    control_fd: int = -1
    master_pid: int = 0
    # Where to write its metrics samples, when they are served.
    metrics_dir: str | None = None
    multiprocess: bool = False
    # Say what it serves (its mounts, counted, and warnings) when ready.
    describe: bool = False

    def to_env(self) -> dict[str, str]:
        return {ENV: json.dumps(dataclasses.asdict(self))}

    @classmethod
    def from_env(cls) -> WorkerConfig:
        """The config this process was started with, taken out of the environment so that
        the app's own child processes do not see it."""
        return cls(**json.loads(os.environ.pop(ENV)))


def write_ready(fd: int, served: dict | None = None) -> None:
    """A worker's word that it serves, with what it serves when it was asked to describe it;
    closes the pipe."""
    said = b"" if served is None else json.dumps(served).encode()
    os.write(fd, b"ok " + said + b"\n")
    os.close(fd)


def read_ready(fd: int) -> dict | None:
    """What a worker wrote on its ready pipe, read up to its close; closes the pipe. None when
    it did not start; else what it serves, ``{}`` when it was not asked."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    data = b"".join(chunks)
    if not data.startswith(b"ok"):
        return None
    if not data[2:].strip():
        return {}
    try:
        return json.loads(data[2:])
    except ValueError:
        return {}


def ask_recycle(fd: int, pid: int, reason: str) -> None:
    """A worker's request to be recycled; ``reason`` goes into the supervisor's log line."""
    try:
        os.write(fd, f"recycle {pid} {reason}\n".encode())
    except OSError:
        pass  # the supervisor is gone: the worker notices that by itself


def parse_recycle(line: bytes) -> tuple[int, str] | None:
    """The pid and reason of one line of the control pipe; None for anything else."""
    word, _, rest = line.decode(errors="replace").partition(" ")
    pid, _, reason = rest.partition(" ")
    if word != "recycle" or not pid.isdigit():
        return None
    return int(pid), reason


class ControlPipe:
    """The supervisor's end of the pipe all its workers write to (``write_fd`` is handed to
    each); read without blocking, one whole line at a time."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.buffer = b""

    def recycle_requests(self) -> list[tuple[int, str]]:
        """The (pid, reason) of each request to be recycled since the last look."""
        try:
            while chunk := os.read(self.read_fd, 4096):
                self.buffer += chunk
        except BlockingIOError:
            pass
        *lines, self.buffer = self.buffer.split(b"\n")
        return [request for request in map(parse_recycle, lines) if request is not None]
