"""Call a WSGI app directly in a loop, with no server and no sockets.

    python bench/inprocess.py [--wake] MODULE:ATTR [PATH] [CALLS] [WARMUP]

Prints one JSON object: calls/s, per-call p50/p99 latency and peak RSS.
This is the ceiling a single-interpreter server can reach for an app whose
time is spent holding the GIL, so the server's rate is reported against it.

With --wake, each call is followed by a one-byte write to a pipe that another
process sleeps on, waking it. A server has to do at least that much per
response: its client (or its own network thread) waits asleep for it. On a
virtual machine, waking a sleeping CPU can cost far more than the write.
"""

import importlib
import io
import json
import os
import resource
import subprocess
import sys
import time


def load(target):
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in (attr or "application").split("."):
        obj = getattr(obj, part)
    return obj


def base_environ(path):
    # What a server would hand over for `GET <path> HTTP/1.1` with only a
    # Host header, as wrk sends it.
    path_info, _, query = path.partition("?")
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def call_once(app, base):
    # A new dict and input stream per call, as a server builds them per
    # request; the app may mutate both.
    environ = dict(base)
    environ["wsgi.input"] = io.BytesIO(b"")
    status_seen = []

    def start_response(status, headers, exc_info=None):
        status_seen.append(status)
        return lambda data: None

    result = app(environ, start_response)
    size = 0
    try:
        for chunk in result:
            size += len(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return status_seen[-1], size


def percentile(sorted_values, fraction):
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def waker():
    """A write that wakes a sleeping process (no GIL of ours involved)."""
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, bufsize=0)
    fd = reader.stdin.fileno()
    return lambda: os.write(fd, b"x")


def main(argv):
    wake = "--wake" in argv
    argv = [a for a in argv if a != "--wake"]
    wake_one = waker() if wake else None
    target = argv[1]
    path = argv[2] if len(argv) > 2 else "/"
    calls = int(argv[3]) if len(argv) > 3 else 3000
    warmup = int(argv[4]) if len(argv) > 4 else 200

    app = load(target)
    base = base_environ(path)
    status, _ = call_once(app, base)
    if not status.startswith("200"):
        print(f"inprocess: {target} {path} answered {status!r}", file=sys.stderr)
        return 1
    # Warm caches (templates, URL resolver, DB connection) like the servers'
    # warm-up does.
    for _ in range(warmup):
        call_once(app, base)

    latencies = []
    clock = time.perf_counter
    started = clock()
    for _ in range(calls):
        t0 = clock()
        call_once(app, base)
        if wake_one is not None:
            wake_one()
        latencies.append(clock() - t0)
    elapsed = clock() - started

    latencies.sort()
    print(
        json.dumps(
            {
                "calls": calls,
                "seconds": elapsed,
                "rps": calls / elapsed,
                "p50_ms": percentile(latencies, 0.50) * 1e3,
                "p99_ms": percentile(latencies, 0.99) * 1e3,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
