"""Application errors (PEP 3333 "Error Handling"), contract violations, a
full worker pool, and a run under wsgiref.validate.

Rule for every error: if nothing was sent yet, the client gets a 500 that
reveals no internals; if the response had already started, the connection
is aborted so the client can tell the body is incomplete. Either way the
server goes on serving.
"""

import re
import threading
import time
from urllib.parse import quote

import pytest

from tests.apps.errors import BAD_HEADERS, BAD_STATUS, SECRET
from tests.support import (
    ConnectionClosed,
    RawConnection,
    build_request,
    raw_request,
    read_marker_file,
    wait_for,
)
from tests.support.apps import ERRORS


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(ERRORS, "--threads", "4")


def get(srv, target, method="GET", timeout=5):
    return raw_request(srv.port, method, target, timeout=timeout)


def assert_server_still_works(srv):
    resp = get(srv, "/ok")
    assert (resp.status, resp.body) == (200, b"ok"), "server did not recover after the error"


def assert_clean_500(resp):
    assert resp.status == 500, resp
    assert b"Traceback" not in resp.body, "traceback leaked to the client"
    assert SECRET.encode() not in resp.body, "exception message leaked to the client"
    assert SECRET.encode() not in resp.raw_head
    assert resp.complete


ERROR_PATHS = {
    "raise-before-start_response": "/raise",
    "raise-after-start_response": "/raise-after-start",
    "raise-in-first-iteration": "/raise-in-first-iteration",
    "no-start_response": "/no-start-response",
    "returns-None": "/return-none",
    "yields-str": "/yield-str",
}


@pytest.mark.parametrize("path", ERROR_PATHS.values(), ids=ERROR_PATHS.keys())
def test_error_before_body_is_500(srv, path):
    """PEP 3333 'Error Handling': an app error before any output reaches
    the client becomes an error response. Also covers contract breaches:
    body without start_response, a non-iterable result, str instead of
    bytes (PEP 3333: body blocks are bytestrings)."""
    assert_clean_500(get(srv, path))
    assert_server_still_works(srv)


@pytest.mark.parametrize("variant", BAD_STATUS, ids=list(BAD_STATUS))
def test_bad_status_is_500(srv, variant):
    """PEP 3333: status is a str of a 3-digit code, a space and a reason
    ('999 Message here'); anything else is an app error."""
    assert_clean_500(get(srv, f"/bad-status/{variant}"))
    assert_server_still_works(srv)


@pytest.mark.parametrize("variant", BAD_HEADERS, ids=list(BAD_HEADERS))
def test_bad_header_is_500(srv, variant):
    """PEP 3333: response_headers is a list of (str, str) tuples; values
    are latin-1 encodable ('Unicode Issues') and contain no control
    characters (no CR/LF, so no header injection);
    hop-by-hop headers (Connection, Keep-Alive, Transfer-Encoding, Upgrade,
    ...) are the server's business, and supplying them is a fatal error."""
    resp = get(srv, f"/bad-header/{variant}")
    assert_clean_500(resp)
    assert resp.header("Injected") is None, "header injection reached the wire"
    assert resp.body != b"should not be sent"
    assert_server_still_works(srv)


# The abort tests repeat the request: whether bytes already handed to the
# server reach the client before the abort is timing-dependent, and a single
# try would let a lossy abort pass most of the time.
ABORT_TRIES = 150


@pytest.mark.parametrize(
    "path", ["/abort-sized", "/abort-chunked"], ids=["content-length", "chunked"]
)
def test_error_after_body_started_aborts_connection(srv, path, tmp_path):
    """PEP 3333 'Error Handling': once headers were sent the status cannot
    change, so the server aborts the connection; the client must see an
    incomplete body (short of Content-Length, or no final 0-chunk) rather
    than a response that looks complete. The blocks yielded before the
    error were handed over for sending and must arrive ('Buffering and
    Streaming': a yielded block is fully transmitted). close() is called."""
    problems = []
    markers = []
    for i in range(ABORT_TRIES):
        marker = tmp_path / f"closed-{i}"
        markers.append(marker)
        try:
            resp = get(srv, f"{path}?marker={quote(str(marker), safe='')}")
        except ConnectionClosed:
            problems.append(f"try {i}: closed before the response head")
            continue
        assert resp.status == 200
        assert resp.complete is False, "a failed response must not look complete"
        assert SECRET.encode() not in resp.body
        if resp.body != b"x" * 1000 + b"y" * 1000:
            problems.append(f"try {i}: {len(resp.body)} of the 2000 bytes yielded before the error")
    assert not problems, (
        f"{len(problems)} of {ABORT_TRIES} aborted responses lost yielded bytes: {problems[:5]}"
    )
    missing = [m.name for m in markers if read_marker_file(m, 5) != "closed"]
    assert not missing, f"close() not called after the iteration error: {missing[:5]}"
    assert_server_still_works(srv)


def test_close_called_when_iteration_raises_early(srv, tmp_path):
    """PEP 3333: close() is called 'whether the request was completed
    normally, or terminated early due to an application error during
    iteration'."""
    marker = tmp_path / "closed"
    assert_clean_500(get(srv, f"/raise-in-first-iteration?marker={quote(str(marker), safe='')}"))
    assert read_marker_file(marker, 5) == "closed"


def test_exc_info_after_headers_sent_reraises(srv):
    """PEP 3333: if headers were already sent, start_response(..., exc_info)
    must re-raise the exception; here it propagates out of the app, so the
    connection is aborted after the partial body."""
    resp = get(srv, "/exc-info-after-headers")
    assert resp.status == 200
    assert resp.body.startswith(b"partial body")
    assert b"did not raise" not in resp.body, (
        "start_response(exc_info) did not raise after headers were sent"
    )
    assert resp.complete is False
    assert_server_still_works(srv)


def test_many_errors_do_not_exhaust_workers(srv):
    """Worker threads are returned to the pool after every kind of error:
    more failing requests than threads, then a normal one."""
    for _ in range(3):
        for path in ERROR_PATHS.values():
            assert get(srv, path).status == 500
    assert_server_still_works(srv)


# --- a full pool -----------------------------------------------------------------


def test_full_queue_gets_503_with_retry_after(server, tmp_path):
    """With every worker busy and the queue full, the server sheds load at
    once with 503 and Retry-After (RFC 9110 15.6.4, 10.2.3) instead of
    letting connections hang; queued requests still complete later."""
    srv = server(ERRORS, "--threads", "1", "--queue", "1")
    go = tmp_path / "go"
    target = f"/block?go={quote(str(go), safe='')}"
    n = 6
    results = [None] * n

    def one(i):
        start = time.monotonic()
        try:
            with RawConnection(srv.port, timeout=20) as c:
                c.send(build_request("GET", target, host="h"))
                resp = c.read_response()
            results[i] = (resp, time.monotonic() - start)
        except Exception as e:  # recorded for the assertion below
            results[i] = (e, time.monotonic() - start)

    threads = []
    try:
        for i in range(n):
            t = threading.Thread(target=one, args=(i,), daemon=True)
            t.start()
            threads.append(t)
            time.sleep(0.05)  # in order: the first one takes the only worker
        # While the worker is still blocked, the overflow must already be answered.
        quick = wait_for(
            lambda: [
                r for r in results if r and not isinstance(r[0], Exception) and r[0].status == 503
            ],
            2.5,
        )
        assert quick, f"no 503 within 2.5 s while the pool was full: {results}"
    finally:
        go.touch()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "some requests hung"
    errors = [r for r in results if isinstance(r[0], Exception)]
    assert not errors, errors
    statuses = [r[0].status for r in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1, statuses
    assert statuses.count(503) >= n - 3, (
        f"queue=1, threads=1: at most 2 should be admitted, got {statuses}"
    )
    for resp, elapsed in results:
        if resp.status == 503:
            ra = resp.header("Retry-After")
            assert ra is not None and ra.strip().isdigit(), (
                f"503 without a valid Retry-After: {resp.headers}"
            )
            assert elapsed < 2.0, f"503 took {elapsed:.2f} s"
        else:
            assert resp.json() == {"released": True}
    assert get(srv, "/ok").status == 200


# --- wsgiref.validate -----------------------------------------------------------


def test_validator_sees_no_violations(server, tmp_path):
    """wsgiref.validate checks the server side of PEP 3333 (environ types and
    keys, input/errors streams, start_response/write, close() being
    called). Several kinds of requests must pass it without a warning or an
    assertion."""
    log = tmp_path / "validator.log"
    log.write_text("")
    srv = server("tests.apps.validated:app", env={"BARTIZAN_TEST_VALIDATOR_LOG": str(log)})
    with RawConnection(srv.port) as c:
        r = c.request("GET", "/?a=1&b=2")
        assert (r.status, r.body) == (200, b"validated hello\n")
        r = c.request("POST", "/echo", [("Content-Type", "text/plain")], b"line one\nline two\n")
        assert (r.status, r.body) == (200, b"line one\nline two\n")
        r = c.request("HEAD", "/")
        assert r.status == 200 and r.body == b""
        r = c.request("GET", "/gen")
        assert (r.status, r.body) == (200, b"".join(b"chunk %d\n" % i for i in range(5)))
        r = c.request("GET", "/write")
        assert (r.status, r.body) == (200, b"written and returned")
        r = c.request("POST", "/echo", [("Transfer-Encoding", "chunked")], b"3\r\nabc\r\n0\r\n\r\n")
        assert r.status == 200
        r = c.request("DELETE", "/thing")
        assert r.status == 200
    # The validator's unclosed-iterator check runs at garbage collection;
    # give the server a moment to finish its side of each request.
    time.sleep(0.5)
    text = log.read_text()
    assert text == "", f"wsgiref.validate reported problems:\n{text}"
    # The app's wsgi.errors lines must have gone somewhere sensible: the
    # server's stderr (PEP 3333 suggests the server's error log).
    assert wait_for(lambda: "validated app: GET /gen" in srv.stderr_text(), 3), srv.stderr_text()


# --- malformed requests -----------------------------------------------------------

# (id, raw request, acceptable statuses, must the connection close, rule).
# A malformed request never reaches the app; the server answers 4xx and goes
# on serving others. Where the framing can't be trusted, the connection is
# closed after the answer.
MALFORMED = [
    (
        "garbage-request-line",
        b"HELLO\r\n\r\n",
        {400},
        True,
        "RFC 9112 2.2: a message not matching the grammar SHOULD get 400, then close",
    ),
    (
        "bad-version",
        b"GET / HTTP/9.Z\r\nHost: h\r\n\r\n",
        {400, 505},
        True,
        "RFC 9112 2.2/2.3: malformed HTTP-version SHOULD get 400 (or 505), then close",
    ),
    (
        "header-without-colon",
        b"GET /ok HTTP/1.1\r\nHost: h\r\nNoColonHere\r\n\r\n",
        {400},
        True,
        "RFC 9112 2.2/5: a field line without ':' SHOULD get 400, then close",
    ),
    (
        "space-before-colon",
        b"GET /ok HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n",
        {400},
        False,
        "RFC 9112 5.1: whitespace between name and colon MUST be rejected with 400",
    ),
    (
        "bad-content-length",
        b"POST /ok HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
        {400},
        True,
        "RFC 9112 6.3: invalid Content-Length: the server MUST respond 400 and then close",
    ),
    (
        "conflicting-content-lengths",
        b"POST /ok HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        {400},
        True,
        "RFC 9112 6.3: differing Content-Length values: the server MUST respond 400 and then close",
    ),
    (
        "missing-host",
        b"GET /ok HTTP/1.1\r\n\r\n",
        {400},
        False,
        "RFC 9112 3.2: an HTTP/1.1 request without Host MUST get 400",
    ),
    (
        "huge-header",
        b"GET /ok HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        {400, 413, 431},
        False,
        "RFC 9110 15.5 / RFC 6585 5: oversized header fields get a 4xx (431), not a silent close",
    ),
]


@pytest.mark.parametrize(
    "raw,statuses,must_close,rule", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_request_rejected(srv, raw, statuses, must_close, rule):
    with RawConnection(srv.port) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse before reading everything (huge header)
        try:
            resp = c.read_response()
        except ConnectionClosed:
            pytest.fail(f"{rule}: connection closed without a response")
        assert resp.status in statuses, f"{rule}: got {resp.status}"
        assert b"Traceback" not in resp.body
        if must_close:
            assert c.is_closed_by_peer(5), f"{rule}: connection left open"
    assert_server_still_works(srv)


def test_content_length_with_transfer_encoding_closes(srv):
    """RFC 9112 6.1: a request with both Transfer-Encoding and Content-Length
    may be rejected or read as chunked, but 'the server MUST close the
    connection after responding' (request smuggling defence): the request
    hidden after the chunked body is never answered."""
    smuggle = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    raw = (
        b"POST /ok HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + smuggle
    )
    with RawConnection(srv.port) as c:
        c.send(raw)
        try:
            data = c.read_to_eof(5)
        except TimeoutError:
            pytest.fail(
                "connection kept open after a request with both Content-Length and Transfer-Encoding"
            )
    statuses = re.findall(rb"^HTTP/1\.[01] (\d{3})", data, re.M)
    assert len(statuses) <= 1, f"the smuggled request was answered: {data!r}"
    assert all(s in (b"200", b"400") for s in statuses), data
    assert_server_still_works(srv)
