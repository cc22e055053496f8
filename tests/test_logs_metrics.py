"""The access log (--access-log, Combined Log Format or JSON) and the
Prometheus metrics (--metrics on the master, Server.metrics_text() embedded)."""

import json
import re
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

import pytest

from tests.support import in_thread, raw_request, wait_for, worker_pids
from tests.support.apps import LIFECYCLE

CLF_RE = re.compile(
    r"^(?P<remote>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "
    r'"(?P<method>[A-Z]+) (?P<target>\S+) (?P<protocol>HTTP/\d\.\d)" '
    r"(?P<status>\d{3}) (?P<bytes>\d+|-) "
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<ua>(?:[^"\\]|\\.)*)" (?P<duration>\d+)$'
)
JSON_KEYS = {
    "time",
    "remote_addr",
    "method",
    "target",
    "protocol",
    "status",
    "bytes",
    "referer",
    "user_agent",
    "duration_us",
}
XFF = ("X-Forwarded-For", "203.0.113.9")


def log_lines(path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line]


def wait_lines(path, n, timeout=5.0):
    """Wait (bounded) for `n` lines, then a little longer to catch extras."""
    wait_for(lambda: len(log_lines(path)) >= n, timeout)
    time.sleep(0.3)
    return log_lines(path)


def by_target(entries, key):
    out = {}
    for e in entries:
        assert e[key] not in out, f"two log lines for {e[key]}: {entries}"
        out[e[key]] = e
    return out


# --- access log ------------------------------------------------------------------------


def test_access_log_combined_format(cli, tmp_path):
    """--access-log PATH writes one line per request: Combined Log Format
    (remote - - [time] "request line" status bytes "referer" "user-agent")
    plus the duration in microseconds; absent referer/user-agent and a
    zero-byte body are written as "-"."""
    log = tmp_path / "access.log"
    srv = cli(LIFECYCLE, f"--access-log={log}")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    requests_made = [
        raw_request(srv.port, "GET", "/hello?q=1&x=%20y"),
        raw_request(
            srv.port,
            "GET",
            "/hello",
            headers=[("Referer", "http://example.test/from"), ("User-Agent", "lifecycle-test/1.0")],
        ),
        raw_request(srv.port, "GET", "/empty"),
        raw_request(srv.port, "GET", "/missing"),
        raw_request(srv.port, "GET", "/sleep?s=0.2"),
    ]
    after = datetime.now(timezone.utc)
    assert [r.status for r in requests_made] == [200, 200, 204, 404, 200]
    lines = wait_lines(log, 5)
    assert len(lines) == 5, f"expected one line per request (5), got {len(lines)}:\n" + "\n".join(
        lines
    )
    entries = []
    for line in lines:
        m = CLF_RE.match(line)
        assert m, f"not Combined Log Format + duration: {line!r}"
        entries.append(m.groupdict() | {"line": line})
    logged = by_target(entries, "target")
    assert set(logged) == {"/hello?q=1&x=%20y", "/hello", "/empty", "/missing", "/sleep?s=0.2"}, (
        list(logged)
    )

    for e in entries:
        assert e["remote"] == "127.0.0.1", e["line"]
        assert e["method"] == "GET" and e["protocol"] == "HTTP/1.1", e["line"]
        t = datetime.strptime(e["time"], "%d/%b/%Y:%H:%M:%S %z")
        assert before.timestamp() - 2 <= t.timestamp() <= after.timestamp() + 2, (
            f"time {e['time']} is not now: {e['line']}"
        )

    q = logged["/hello?q=1&x=%20y"]
    assert (q["status"], q["bytes"], q["referer"], q["ua"]) == ("200", "6", "-", "-"), q["line"]
    h = logged["/hello"]
    assert (h["status"], h["bytes"]) == ("200", "6"), h["line"]
    assert (h["referer"], h["ua"]) == ("http://example.test/from", "lifecycle-test/1.0"), h["line"]
    e = logged["/empty"]
    assert (e["status"], e["bytes"]) == ("204", "-"), e["line"]
    n = logged["/missing"]
    assert (n["status"], n["bytes"]) == ("404", str(len(requests_made[3].body))), n["line"]
    s = logged["/sleep?s=0.2"]
    assert 200_000 <= int(s["duration"]) < 10_000_000, (
        f"a 0.2 s request logged {s['duration']} us: {s['line']}"
    )
    assert int(q["duration"]) < 200_000, f"a quick request logged {q['duration']} us: {q['line']}"


def test_access_log_from_several_workers_has_one_whole_line_per_request(cli, tmp_path):
    """With --workers 2 writing one access log, concurrent requests give
    exactly one well-formed line each (no lost, doubled or interleaved
    lines); an HTTP/1.0 request is logged with its protocol."""
    log = tmp_path / "access.log"
    srv = cli(LIFECYCLE, "--workers", "2", f"--access-log={log}")
    per_thread, threads = 25, 8
    failures = []

    def client(k):
        for i in range(per_thread):
            try:
                r = raw_request(
                    srv.port,
                    "GET",
                    f"/hello?t={k}&i={i}",
                    headers=[("User-Agent", f"client-{k}-" + "x" * 200)],
                )
                if r.status != 200:
                    failures.append(r.status)
            except Exception as e:  # counted below
                failures.append(repr(e))

    workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert not failures, failures[:5]
    old = raw_request(srv.port, "GET", "/hello?old", version="HTTP/1.0")
    assert old.status == 200
    expected = {f"/hello?t={k}&i={i}" for k in range(threads) for i in range(per_thread)} | {
        "/hello?old"
    }
    lines = wait_lines(log, len(expected))
    bad = [line for line in lines if not CLF_RE.match(line)]
    assert not bad, f"{len(bad)} malformed lines, e.g. {bad[:3]}"
    targets = [CLF_RE.match(line).group("target") for line in lines]
    assert len(targets) == len(expected) and set(targets) == expected, (
        f"{len(targets)} lines for {len(expected)} requests; "
        f"missing {sorted(expected - set(targets))[:5]}"
    )
    [line10] = [line for line in lines if "/hello?old" in line]
    assert CLF_RE.match(line10).group("protocol") == "HTTP/1.0", line10


@pytest.mark.parametrize(
    "extra,expected",
    [([], "203.0.113.9"), (["--trusted-proxies", ""], "127.0.0.1")],
    ids=["loopback-trusted-by-default", "no-trusted-proxies"],
)
def test_access_log_remote_is_the_resolved_client(cli, tmp_path, extra, expected):
    """The logged remote address is the client after trusted-proxy
    resolution: X-Forwarded-For from 127.0.0.1 (trusted by default) logs the
    forwarded address; with --trusted-proxies "" the header is ignored and the
    peer address is logged."""
    log = tmp_path / "access.log"
    srv = cli(LIFECYCLE, f"--access-log={log}", *extra)
    assert raw_request(srv.port, "GET", "/hello", headers=[XFF]).status == 200
    lines = wait_lines(log, 1)
    assert len(lines) == 1, lines
    m = CLF_RE.match(lines[0])
    assert m, lines[0]
    assert m.group("remote") == expected, lines[0]


def test_access_log_json_format(cli, tmp_path):
    """--access-log-format json: one JSON object per line with exactly the
    keys time, remote_addr, method, target, protocol, status, bytes, referer,
    user_agent, duration_us, holding the request's values."""
    log = tmp_path / "access.jsonl"
    srv = cli(LIFECYCLE, f"--access-log={log}", "--access-log-format", "json")
    t0 = time.time()
    r1 = raw_request(
        srv.port,
        "GET",
        "/hello?a=1",
        headers=[("User-Agent", 'agent "quoted"'), ("Referer", "http://r.test/"), XFF],
    )
    r2 = raw_request(srv.port, "GET", "/empty")
    r3 = raw_request(srv.port, "GET", "/sleep?s=0.1")
    assert (r1.status, r2.status, r3.status) == (200, 204, 200)
    lines = wait_lines(log, 3)
    assert len(lines) == 3, lines
    entries = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON object: {line!r}")
        assert isinstance(obj, dict) and set(obj) == JSON_KEYS, f"keys {sorted(obj)}: {line}"
        entries.append(obj)
    logged = by_target(entries, "target")
    a = logged["/hello?a=1"]
    assert a["remote_addr"] == "203.0.113.9", a
    assert (a["method"], a["protocol"], a["status"], a["bytes"]) == ("GET", "HTTP/1.1", 200, 6), a
    assert (a["referer"], a["user_agent"]) == ("http://r.test/", 'agent "quoted"'), a
    e = logged["/empty"]
    assert (e["status"], e["bytes"]) == (204, 0), e
    assert e["referer"] in ("", "-", None) and e["user_agent"] in ("", "-", None), e
    s = logged["/sleep?s=0.1"]
    assert isinstance(s["duration_us"], int) and 100_000 <= s["duration_us"] < 10_000_000, s
    for obj in entries:
        assert isinstance(obj["time"], str) and obj["time"], obj
        try:
            when = parsedate_to_datetime(obj["time"]).timestamp()
        except (TypeError, ValueError):
            when = datetime.fromisoformat(obj["time"].replace("Z", "+00:00")).timestamp()
        assert t0 - 2 <= when <= time.time() + 2, f"time {obj['time']!r} is not now"


def test_access_log_is_off_by_default_and_dash_means_stdout(cli, tmp_path):
    """Without --access-log nothing is written to standard output per
    request; with `--access-log -` each request is one line on standard
    output."""
    quiet = cli(LIFECYCLE)
    loud = cli(LIFECYCLE, "--access-log", "-")
    for srv in (quiet, loud):
        for i in range(3):
            assert raw_request(srv.port, "GET", f"/hello?n={i}").status == 200
    wait_for(lambda: len(loud.stdout_text().splitlines()) >= 3, 5)
    time.sleep(0.5)
    assert quiet.stdout_text() == "", f"output without --access-log: {quiet.stdout_text()!r}"
    lines = loud.stdout_text().splitlines()
    assert len(lines) == 3, lines
    assert all(CLF_RE.match(line) for line in lines), lines
    assert sorted(CLF_RE.match(line).group("target") for line in lines) == [
        "/hello?n=0",
        "/hello?n=1",
        "/hello?n=2",
    ]


# --- metrics over the CLI ------------------------------------------------------------------


SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$"
)


def parse_metrics(text):
    """(samples, types): samples as (name, {labels}, float); types as
    {family: type}. Checks the exposition-format rules on the way: one TYPE
    line per family, and a family's samples all after its TYPE line and
    together."""
    samples, types, order = [], {}, []
    current = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            assert family not in types, f"# TYPE {family} appears more than once:\n{text}"
            types[family] = kind
            current = family
            order.append(family)
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"malformed sample line {line!r}"
        name = m.group("name")
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family == current, (
            f"sample {line!r} is not under its family's TYPE line (current: {current})"
        )
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
        samples.append((name, labels, float(m.group("value"))))
    return samples, types


def fetch_metrics(url):
    parts = urlsplit(url)
    r = raw_request(parts.port, "GET", parts.path, host=parts.hostname)
    assert r.status == 200, r
    assert r.header("Content-Type", "").startswith("text/plain"), r.headers
    return r.body.decode()


def total(samples, name, **want):
    return sum(
        v
        for n, labels, v in samples
        if n == name and all(labels.get(k) == w for k, w in want.items())
    )


def test_metrics_endpoint_counts_requests_of_all_workers(cli, tmp_path):
    """--metrics ADDR:PORT serves Prometheus text for all workers:
    bartizan_requests_total{worker,status} summed over workers equals the
    requests made (404s under status="404"); every worker has
    requests_in_flight, queue_length, a duration histogram whose +Inf bucket
    equals its _count and its requests, and worker_rss_bytes > 1 MB;
    bartizan_workers is N; each TYPE line appears once."""
    srv = cli(LIFECYCLE, "--workers", "2", "--metrics", "127.0.0.1:0")
    assert srv.metrics_url.endswith("/metrics") and urlsplit(srv.metrics_url).port != srv.port, (
        srv.metrics_url
    )
    workers = worker_pids(srv)
    assert len(workers) == 2, workers
    ok_count, missing_count = 30, 4
    for _ in range(ok_count):
        assert raw_request(srv.port, "GET", "/hello").status == 200
    for _ in range(missing_count):
        assert raw_request(srv.port, "GET", "/no-such-page").status == 404

    def counted():
        samples, _ = parse_metrics(fetch_metrics(srv.metrics_url))
        return (
            total(samples, "bartizan_requests_total", status="200"),
            total(samples, "bartizan_requests_total", status="404"),
        )

    wait_for(lambda: counted() == (ok_count, missing_count), 4, interval=0.2)
    text = fetch_metrics(srv.metrics_url)
    samples, types = parse_metrics(text)
    assert (
        total(samples, "bartizan_requests_total", status="200"),
        total(samples, "bartizan_requests_total", status="404"),
    ) == (
        ok_count,
        missing_count,
    ), text
    assert types.get("bartizan_requests_total") == "counter", types
    assert types.get("bartizan_request_duration_seconds") == "histogram", types
    for family in (
        "bartizan_requests_in_flight",
        "bartizan_queue_length",
        "bartizan_worker_rss_bytes",
        "bartizan_workers",
    ):
        assert types.get(family) == "gauge", f"{family}: {types}"

    labelled = {labels.get("worker") for n, labels, _ in samples if n == "bartizan_requests_total"}
    assert labelled <= {str(p) for p in workers}, (
        f"worker labels {labelled} are not the workers {workers}"
    )
    for pid in map(str, workers):
        for name in (
            "bartizan_requests_in_flight",
            "bartizan_queue_length",
            "bartizan_request_duration_seconds_count",
        ):
            assert any(n == name and labels.get("worker") == pid for n, labels, _ in samples), (
                f"no {name} for worker {pid}:\n{text}"
            )
        inf = total(samples, "bartizan_request_duration_seconds_bucket", worker=pid, le="+Inf")
        count = total(samples, "bartizan_request_duration_seconds_count", worker=pid)
        answered = total(samples, "bartizan_requests_total", worker=pid)
        assert inf == count == answered, (
            f"worker {pid}: +Inf bucket {inf}, _count {count}, requests_total {answered}"
        )
        rss = [
            v
            for n, labels, v in samples
            if n == "bartizan_worker_rss_bytes" and labels.get("worker") == pid
        ]
        assert len(rss) == 1 and rss[0] > 1_000_000, f"worker {pid} rss samples {rss}"
    assert total(samples, "bartizan_request_duration_seconds_count") == ok_count + missing_count
    assert [v for n, _, v in samples if n == "bartizan_workers"] == [2.0], text


def test_metrics_in_flight_gauge_follows_a_running_request(cli, tmp_path):
    """bartizan_requests_in_flight (summed over workers) is 1 while a request
    runs in the app and back to 0 after it has been answered."""
    srv = cli(LIFECYCLE, "--metrics", "127.0.0.1:0")
    go, started = tmp_path / "go", tmp_path / "started"
    t, out = in_thread(
        lambda: raw_request(
            srv.port,
            "GET",
            f"/block?go={quote(str(go), safe='')}&started={quote(str(started), safe='')}",
            timeout=20,
        )
    )

    def in_flight():
        samples, _ = parse_metrics(fetch_metrics(srv.metrics_url))
        return total(samples, "bartizan_requests_in_flight")

    try:
        assert wait_for(started.exists, 5)
        assert wait_for(lambda: in_flight() == 1, 4, interval=0.2), f"in flight: {in_flight()}"
    finally:
        go.touch()
    t.join(10)
    assert out.get("value") is not None and out["value"].status == 200, out
    assert wait_for(lambda: in_flight() == 0, 4, interval=0.2), (
        f"in flight after the answer: {in_flight()}"
    )


# --- metrics, embedded ----------------------------------------------------------------------------


def test_embedded_metrics_text_counts_and_gauges():
    """Server.metrics_text() returns Prometheus text for that server: counts
    by status (200, 404, and the 503s of a locked server), the request
    histogram, and queue_length / in_flight for requests held by
    lock(hold=True); `labels` go on every sample."""
    import bartizan

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        status = "404 Not Found" if path == "/missing" else "200 OK"
        body = path.encode()
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    s = bartizan.Server(app, port=0, threads=2).start()
    try:
        for _ in range(3):
            assert raw_request(s.port, "GET", "/ok").status == 200
        for _ in range(2):
            assert raw_request(s.port, "GET", "/missing").status == 404
        s.lock()
        assert raw_request(s.port, "GET", "/ok").status == 503
        s.unlock()
        samples, _ = parse_metrics(s.metrics_text())
        assert total(samples, "bartizan_requests_total", status="200") == 3
        assert total(samples, "bartizan_requests_total", status="404") == 2
        assert total(samples, "bartizan_requests_total", status="503") == 1
        assert total(samples, "bartizan_request_duration_seconds_bucket", le="+Inf") == 6
        assert total(samples, "bartizan_request_duration_seconds_count") == 6
        assert total(samples, "bartizan_requests_in_flight") == 0
        assert total(samples, "bartizan_queue_length") == 0

        s.lock(hold=True)
        held = [
            in_thread(lambda: raw_request(s.port, "GET", "/held", timeout=10)) for _ in range(2)
        ]
        try:
            assert wait_for(lambda: s.pending == 2, 5), s.pending
            samples, _ = parse_metrics(s.metrics_text())
            assert total(samples, "bartizan_queue_length") == 2, s.metrics_text()
            assert total(samples, "bartizan_requests_in_flight") == 2, s.metrics_text()
        finally:
            s.unlock()
        for t, out in held:
            t.join(5)
            assert out.get("value") is not None and out["value"].status == 200, out
        assert wait_for(
            lambda: (
                total(parse_metrics(s.metrics_text())[0], "bartizan_requests_total", status="200")
                == 5
            ),
            3,
        )

        labelled, _ = parse_metrics(s.metrics_text('worker="w1"'))
        assert labelled and all(labels.get("worker") == "w1" for _, labels, _ in labelled), labelled
    finally:
        s.stop(5)
