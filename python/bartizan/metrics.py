"""The supervisor's Prometheus endpoint (``--metrics``): one page for all worker processes.

Each worker writes its own samples, labelled ``worker="PID"``, to ``PID.prom`` in a directory
the supervisor owns (see ``worker.write_metrics``), so reading them costs a worker nothing.
The text format wants each metric's samples together under one HELP and TYPE, so the files
are merged family by family, not concatenated; the supervisor adds what only it knows (how
many workers run, how much memory each holds).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def worker_families(directory: str, pids: Iterable[int]) -> list[str]:
    """The samples of the workers in ``pids``, grouped by metric family; the HELP and TYPE
    lines once per family. Files of other pids (a worker that died) are left out."""
    live = set(pids)
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []  # removed as the supervisor stops
    for name in names:
        pid, _, ext = name.partition(".")
        # Only finished files: `PID.prom.tmp` is one a worker is still writing.
        if ext != "prom" or not pid.isdigit() or int(pid) not in live:
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                text = f.read()
        except OSError:
            continue
        family = None
        for line in text.splitlines():
            parts = line.split(maxsplit=3)
            if line.startswith("# ") and len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                family = parts[2]
                head = heads.setdefault(family, [])
                samples.setdefault(family, [])
                if not any(h.split()[1] == parts[1] for h in head):
                    head.append(line)
            elif line and family:
                samples[family].append(line)
    out = []
    for family, head in heads.items():
        out.extend(head)
        out.extend(samples[family])
    return out


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid``, from /proc; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def render(
    directory: str,
    pids: list[int],
    rss: Callable[[int], int | None] = rss_bytes,
) -> str:
    """The page: the samples of the workers in ``pids``, then the supervisor's own."""
    out = worker_families(directory, pids)
    out.append("# HELP bartizan_worker_rss_bytes Resident memory of each worker process.")
    out.append("# TYPE bartizan_worker_rss_bytes gauge")
    for pid in pids:
        size = rss(pid)
        if size is not None:
            out.append(f'bartizan_worker_rss_bytes{{worker="{pid}"}} {size}')
    out.append("# HELP bartizan_workers Worker processes running.")
    out.append("# TYPE bartizan_workers gauge")
    out.append(f"bartizan_workers {len(pids)}")
    return "\n".join(out) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/", "/metrics"):
            self.send_error(404)
            return
        body = self.server.page().encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, page: Callable[[], str]) -> None:
        self.page = page
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)


def serve(host: str, port: int, page: Callable[[], str]) -> ThreadingHTTPServer:
    """Serves ``page()`` at ``/metrics`` (and ``/``) on a daemon thread. Raises OSError when
    it cannot listen."""
    httpd = _MetricsServer(host, port, page)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()
    return httpd


class Endpoint:
    """``--metrics ADDR``: the directory the workers write their samples to, and the page
    that merges those of the workers ``pids()`` names."""

    def __init__(self, addr: str, pids: Callable[[], list[int]]) -> None:
        host, port = split_bind(addr)
        self.directory = tempfile.mkdtemp(prefix="bartizan-metrics-")
        try:
            httpd = serve(host, port, lambda: render(self.directory, pids()))
        except BaseException:
            self.remove_directory()
            raise
        self.url = f"http://{addr.rsplit(':', 1)[0]}:{httpd.server_address[1]}/metrics"

    def remove_directory(self) -> None:
        """Done on every way out of the supervisor: the directory must not outlive it."""
        shutil.rmtree(self.directory, ignore_errors=True)


def split_bind(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"--bind {addr!r}: expected HOST:PORT")
    return host, int(port)
