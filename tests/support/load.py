"""Client load for the tests that change workers under traffic (reloads, recycling): threads
looping keep-alive requests and counting every failure."""

from __future__ import annotations

import threading

from tests.support.raw import ConnectionClosed, RawConnection


class LoadClient(threading.Thread):
    """Loops keep-alive GETs; on `Connection: close` it reconnects (as an
    HTTP/1.1 client must). Any socket error, reset, timeout, truncated body or
    non-2xx status is a failure."""

    def __init__(self, port, stop, limit, path="/hello", body=b"hello\n"):
        super().__init__(daemon=True)
        self.port, self.stop, self.limit = port, stop, limit
        self.path, self.body = path, body
        self.ok = 0
        self.reconnects = 0
        self.failures = []

    def run(self):
        conn = None
        while not self.stop.is_set() and self.ok < self.limit:
            try:
                if conn is None:
                    conn = RawConnection(self.port, timeout=5)
                r = conn.request("GET", self.path)
                if not (200 <= r.status < 300) or not r.complete or r.body != self.body:
                    self.failures.append(
                        f"status {r.status}, complete={r.complete}, body={r.body[:40]!r}"
                    )
                else:
                    self.ok += 1
                if (r.header("Connection") or "").lower() == "close" or not r.complete:
                    conn.close()
                    conn = None
                    self.reconnects += 1
            except (OSError, ConnectionClosed, AssertionError) as e:
                self.failures.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def start_load(port, fast=6, slow=2, slow_path="/sleep?s=0.05", slow_body=b"slept\n"):
    """`fast` clients on /hello and `slow` on a slow page (so requests are in flight whenever
    a worker retires), started; returns the event that stops them, and the clients."""
    stop = threading.Event()
    clients = [LoadClient(port, stop, limit=10_000_000) for _ in range(fast)]
    clients += [
        LoadClient(port, stop, limit=10_000_000, path=slow_path, body=slow_body)
        for _ in range(slow)
    ]
    for c in clients:
        c.start()
    return stop, clients


def run_load(clients: list[LoadClient]) -> tuple[int, list[str], int]:
    """Joins the clients (their `stop` must be set); returns requests that succeeded, the
    failures, and the reconnects."""
    for c in clients:
        c.join(10)
    assert not any(c.is_alive() for c in clients), "a load client did not finish"
    ok = sum(c.ok for c in clients)
    failures = [f for c in clients for f in c.failures]
    return ok, failures, sum(c.reconnects for c in clients)
