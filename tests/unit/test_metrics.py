"""The supervisor's merge of the workers' metrics files (bartizan.metrics): one HELP and TYPE
per metric, every live worker's samples under it, then the supervisor's own samples. The
files are written here as worker.py writes them (the extension's `metrics_text` with
`worker="PID"`, src/metrics.rs); the end-to-end endpoint is in test_logs_metrics.py."""

import os
import urllib.error
import urllib.request

import pytest
from bartizan import metrics

BOUNDS = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5"]
BOUNDS += ["5", "10", "+Inf"]


def worker_text(pid, statuses, in_flight, queued, pending, buckets, seconds):
    """What src/metrics.rs renders: `buckets` cumulative, one per bound in BOUNDS."""
    w = f'worker="{pid}"'
    lines = [
        "# HELP bartizan_requests_total Requests answered, by status code.",
        "# TYPE bartizan_requests_total counter",
        *(f'bartizan_requests_total{{{w},status="{s}"}} {n}' for s, n in statuses),
        "# HELP bartizan_requests_in_flight Requests not yet answered.",
        "# TYPE bartizan_requests_in_flight gauge",
        f"bartizan_requests_in_flight{{{w}}} {in_flight}",
        "# HELP bartizan_queue_length App requests waiting for a thread.",
        "# TYPE bartizan_queue_length gauge",
        f"bartizan_queue_length{{{w}}} {queued}",
        "# HELP bartizan_app_pending App requests queued or running.",
        "# TYPE bartizan_app_pending gauge",
        f"bartizan_app_pending{{{w}}} {pending}",
        "# HELP bartizan_request_duration_seconds Time from request to response head.",
        "# TYPE bartizan_request_duration_seconds histogram",
        *(
            f'bartizan_request_duration_seconds_bucket{{{w},le="{b}"}} {n}'
            for b, n in zip(BOUNDS, buckets, strict=True)
        ),
        f"bartizan_request_duration_seconds_sum{{{w}}} {seconds}",
        f"bartizan_request_duration_seconds_count{{{w}}} {buckets[-1]}",
    ]
    return "\n".join(lines) + "\n"


# Worker 23 answered 200 twice (0.5 ms, 30 ms) and 503 once (20 s); worker 101 nothing yet,
# one request in flight.
W23 = worker_text(23, [(200, 2), (503, 1)], 0, 0, 0, [1] * 5 + [2] * 8 + [3], 20.0305)
W101 = worker_text(101, [], 1, 0, 1, [0] * 14, 0)


def bucket_lines(pid, counts):
    return [
        f'bartizan_request_duration_seconds_bucket{{worker="{pid}",le="{b}"}} {n}'
        for b, n in zip(BOUNDS, counts, strict=True)
    ]


# Files in name order ("101.prom" before "23.prom"): worker 101's samples come first.
MERGED_WORKERS = [
    "# HELP bartizan_requests_total Requests answered, by status code.",
    "# TYPE bartizan_requests_total counter",
    'bartizan_requests_total{worker="23",status="200"} 2',
    'bartizan_requests_total{worker="23",status="503"} 1',
    "# HELP bartizan_requests_in_flight Requests not yet answered.",
    "# TYPE bartizan_requests_in_flight gauge",
    'bartizan_requests_in_flight{worker="101"} 1',
    'bartizan_requests_in_flight{worker="23"} 0',
    "# HELP bartizan_queue_length App requests waiting for a thread.",
    "# TYPE bartizan_queue_length gauge",
    'bartizan_queue_length{worker="101"} 0',
    'bartizan_queue_length{worker="23"} 0',
    "# HELP bartizan_app_pending App requests queued or running.",
    "# TYPE bartizan_app_pending gauge",
    'bartizan_app_pending{worker="101"} 1',
    'bartizan_app_pending{worker="23"} 0',
    "# HELP bartizan_request_duration_seconds Time from request to response head.",
    "# TYPE bartizan_request_duration_seconds histogram",
    *bucket_lines(101, [0] * 14),
    'bartizan_request_duration_seconds_sum{worker="101"} 0',
    'bartizan_request_duration_seconds_count{worker="101"} 0',
    *bucket_lines(23, [1] * 5 + [2] * 8 + [3]),
    'bartizan_request_duration_seconds_sum{worker="23"} 20.0305',
    'bartizan_request_duration_seconds_count{worker="23"} 3',
]


@pytest.fixture
def metrics_dir(tmp_path):
    (tmp_path / "23.prom").write_text(W23)
    (tmp_path / "101.prom").write_text(W101)
    return tmp_path


def fixed_rss(sizes):
    return lambda pid: sizes.get(pid)


def test_the_workers_files_merge_family_by_family(metrics_dir):
    assert metrics.worker_families(str(metrics_dir), [23, 101]) == MERGED_WORKERS


def test_the_page_ends_with_the_supervisors_samples(metrics_dir):
    page = metrics.render(str(metrics_dir), [23, 101], rss=fixed_rss({23: 5000, 101: 7168}))
    assert (
        page
        == "\n".join(
            [
                *MERGED_WORKERS,
                "# HELP bartizan_worker_rss_bytes Resident memory of each worker process.",
                "# TYPE bartizan_worker_rss_bytes gauge",
                'bartizan_worker_rss_bytes{worker="23"} 5000',
                'bartizan_worker_rss_bytes{worker="101"} 7168',
                "# HELP bartizan_workers Worker processes running.",
                "# TYPE bartizan_workers gauge",
                "bartizan_workers 2",
            ]
        )
        + "\n"
    )


def test_only_the_live_workers_finished_files_count(metrics_dir):
    # A worker that died left its file; 23 is halfway through writing its next one.
    (metrics_dir / "77.prom").write_text(worker_text(77, [(500, 9)], 0, 0, 0, [9] * 14, 1))
    (metrics_dir / "23.prom.tmp").write_text(W23.replace("} 2\n", "} 4\n"))
    (metrics_dir / "notes.prom").write_text(W101)
    assert metrics.worker_families(str(metrics_dir), [23, 101]) == MERGED_WORKERS
    alone = metrics.worker_families(str(metrics_dir), [23])
    assert alone == [line for line in MERGED_WORKERS if 'worker="101"' not in line]


def test_a_worker_without_memory_figures_is_counted_still(tmp_path):
    page = metrics.render(str(tmp_path), [5, 6], rss=fixed_rss({6: 4096}))
    assert page == (
        "# HELP bartizan_worker_rss_bytes Resident memory of each worker process.\n"
        "# TYPE bartizan_worker_rss_bytes gauge\n"
        'bartizan_worker_rss_bytes{worker="6"} 4096\n'
        "# HELP bartizan_workers Worker processes running.\n"
        "# TYPE bartizan_workers gauge\n"
        "bartizan_workers 2\n"
    )


def test_a_removed_directory_leaves_the_supervisors_samples(tmp_path):
    page = metrics.render(str(tmp_path / "gone"), [], rss=fixed_rss({}))
    assert page.splitlines()[-1] == "bartizan_workers 0"
    assert "bartizan_requests_total" not in page


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc")
def test_rss_comes_from_proc():
    assert metrics.rss_bytes(os.getpid()) > 1 << 20
    assert metrics.rss_bytes(2**31 - 1) is None


def test_the_page_is_served_at_metrics():
    httpd = metrics.serve("127.0.0.1", 0, lambda: "bartizan_workers 1\n")
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        for path in ("/metrics", "/", "/metrics?x=1"):
            with urllib.request.urlopen(base + path, timeout=5) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                assert r.read() == b"bartizan_workers 1\n"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(base + "/other", timeout=5)
        assert caught.value.code == 404
        caught.value.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
