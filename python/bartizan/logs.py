"""The server's log lines, in one format for the supervisor, its workers and the Rust side
(whose `tracing` lines look the same): ``2026-12-02T00:30:42.123456Z  INFO bartizan: ...``.

Workers write to a pipe the supervisor reads; it passes each whole line on to its own
stderr under one lock, so lines from several workers never run into one another, and gives
a line that came without a timestamp (a traceback the app printed) the time it arrived.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import IO

_lock = threading.Lock()
STAMPED = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z +([A-Z]+) ")


def stamp(level: str = "INFO") -> str:
    now = time.time()
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{seconds}.{int(now % 1 * 1_000_000):06d}Z {level:>5}"


def log(message: str, level: str = "INFO") -> None:
    """One line of the server's log on stderr."""
    write_line(f"{stamp(level)} bartizan: {message}\n".encode(errors="replace"))


def plural(n: int, word: str) -> str:
    """A count as a log line says it: ``1 request``, ``2 requests``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def write_line(line: bytes) -> None:
    with _lock:
        try:
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()
        except (OSError, ValueError):
            pass  # stderr is gone: nobody to tell


def relay(pipe: IO[bytes]) -> threading.Thread:
    """Passes a worker's stderr on, line by line, until the worker closes it."""

    def pump() -> None:
        level = "INFO"
        for line in iter(pipe.readline, b""):
            if not line.endswith(b"\n"):
                line += b"\n"
            stamped = STAMPED.match(line)
            if stamped:
                level = stamped.group(1).decode()
            else:
                # An indented line goes on the stamped one before it (a logged stack).
                continued = line.startswith((b" ", b"\t"))
                line = f"{stamp(level if continued else 'INFO')} ".encode() + line
            write_line(line)
        pipe.close()

    thread = threading.Thread(target=pump, name="bartizan-log-relay", daemon=True)
    thread.start()
    return thread
