"""Workers recycled without a dropped request: by requests served (--max-requests with
--max-requests-jitter), by resident memory (--max-rss) and by stuck requests (--stuck-limit).
The replacement starts first; only once it serves does the old worker stop taking connections
and drain. Failures are counted under a client loop, never timed."""

from __future__ import annotations

import re
import time

from tests.support import alive, raw_request, rss_kb, wait_for, wait_line, worker_pids
from tests.support.apps import LIFECYCLE
from tests.support.load import run_load, start_load

RECYCLED_RE = re.compile(
    r"^bartizan: worker (\d+) recycled: (.+); worker (\d+) serves in its place"
)


def recycles(srv):
    return [m for line in srv.stderr_lines() if (m := RECYCLED_RE.search(line))]


def under_load(srv, until, clients=6):
    """Runs keep-alive clients (two on a slow page, so requests are in flight whenever a
    worker retires) until `until()` holds; returns (ok, failures, reconnects)."""
    stop, load = start_load(srv.port, fast=clients - 2, slow_path="/sleep?s=0.02")
    try:
        assert wait_for(until, 90), f"not reached; log:\n{srv.stderr_text()[-3000:]}"
    finally:
        stop.set()
    return run_load(load)


def test_twenty_recycles_by_requests_lose_nothing(cli):
    srv = cli(LIFECYCLE, "--workers", "2", "--max-requests", "150", "--max-requests-jitter", "50")
    ok, failures, reconnects = under_load(srv, lambda: len(recycles(srv)) >= 20)
    summary = f"{ok} ok, {len(failures)} failed, {reconnects} reconnects"
    assert not failures, f"{summary}; first failures: {failures[:10]}"
    found = recycles(srv)
    assert all(m.group(2).startswith("served ") for m in found), found[0].group(0)
    # Every old worker ends; two serve at the end.
    olds = [int(m.group(1)) for m in found]
    assert wait_for(lambda: not any(alive(p) for p in olds), 30)
    assert wait_for(lambda: len(worker_pids(srv)) == 2, 10)
    assert raw_request(srv.port, "GET", "/hello").status == 200


def test_recycling_by_resident_memory(cli):
    """--max-rss 40 MiB above what a worker holds once loaded: a view that keeps 80 MiB more
    gets its worker recycled with its memory as the reason, while the clients lose nothing;
    the replacement starts small again."""
    probe = cli(LIFECYCLE)
    [worker] = worker_pids(probe)
    loaded = rss_kb(worker) // 1024
    probe.stop()
    limit = loaded + 40
    srv = cli(LIFECYCLE, "--max-rss", str(limit))
    [old] = worker_pids(srv)

    def grown_and_recycled():
        if not recycles(srv):
            raw_request(srv.port, "GET", "/grow?mb=80")
        return bool(recycles(srv))

    ok, failures, _ = under_load(srv, grown_and_recycled)
    assert not failures, failures[:10]
    assert ok > 0
    [m] = recycles(srv)[:1]
    assert int(m.group(1)) == old
    assert re.fullmatch(rf"\d+ MiB resident \(limit {limit} MiB\)", m.group(2)), m.group(2)


def test_a_memory_limit_below_the_loaded_app_is_said_once_not_looped(cli):
    srv = cli(LIFECYCLE, "--max-rss", "1")
    wait_line(srv, re.compile(r"--max-rss 1 MiB is below this worker's \d+ MiB"), 10)
    # The worker looks every second: three looks, and it is still the same worker.
    [worker] = worker_pids(srv)
    time.sleep(3.5)
    assert raw_request(srv.port, "GET", "/hello").status == 200
    assert not recycles(srv) and worker_pids(srv) == [worker]


def test_a_worker_with_too_many_stuck_requests_is_recycled(cli):
    """--request-timeout 1 --stuck-limit 1: a view that never returns gets 504, its worker is
    recycled for it, and that worker ends after --graceful-timeout though its thread never
    comes back; the new worker serves."""
    srv = cli(
        "tests.apps.stuck:app",
        "--request-timeout",
        "1",
        "--stuck-limit",
        "1",
        "--graceful-timeout",
        "1",
    )
    [old] = worker_pids(srv)
    assert raw_request(srv.port, "GET", "/stuck").status == 504
    m = wait_line(srv, RECYCLED_RE, 20)
    assert (int(m.group(1)), m.group(2)) == (old, "1 request stuck (limit 1)")
    assert wait_for(lambda: not alive(old), 20), "the old worker did not end"
    assert raw_request(srv.port, "GET", "/stuck-count").body == b"0"
    assert int(m.group(3)) in worker_pids(srv)
