"""What a run is configured with: the BENCH_* environment knobs, and the wrk load a
section may set instead."""

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path


def seconds(text):
    """wrk-style duration ("10", "10s", "1m") in seconds."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(s|m|h)?\s*", text)
    if not match:
        sys.exit(f"bench: bad duration {text!r}")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, None: 1}[match[2]]


@dataclass
class Config:
    duration: str = os.environ.get("BENCH_DURATION", "10s")
    warmup: str = os.environ.get("BENCH_WARMUP", "2s")
    connections: int = int(os.environ.get("BENCH_CONNECTIONS", "32"))
    threads: int = int(os.environ.get("BENCH_THREADS", "1"))
    runs: int = max(1, int(os.environ.get("BENCH_RUNS", "1")))
    servers: set | None = None
    inproc_calls: int = int(os.environ.get("BENCH_INPROC_CALLS", "10000"))
    busy: int = int(os.environ.get("BENCH_BUSY", "0"))
    start_timeout: float = 60.0

    def __post_init__(self):
        chosen = os.environ.get("BENCH_SERVERS", "").strip()
        if chosen:
            self.servers = {s.strip() for s in chosen.split(",") if s.strip()}
        # wrk wants a unit; a bare number means seconds.
        for name in ("duration", "warmup"):
            value = getattr(self, name)
            if value and value[-1].isdigit():
                setattr(self, name, value + "s")

    def wants(self, key):
        return self.servers is None or key in self.servers


@dataclass
class Load:
    """How wrk loads a section's servers, where it differs from the Config."""

    connections: int | None = None
    script: Path | None = None  # a wrk Lua script choosing each request's path
