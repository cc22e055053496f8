"""wsgi.input (PEP 3333, "Input and Error Streams"): read(size), read(),
readline(), readlines(), iteration, for Content-Length and chunked request
bodies; streaming of large uploads; `Expect: 100-continue`."""

import hashlib
import itertools
import threading
import time

import pytest

from tests.support import (
    ConnectionClosed,
    RawConnection,
    RssSampler,
    build_request,
    chunked,
    raw_request,
)

INPUTS = "tests.apps.inputs:app"

BODY = b"first line\nsecond line\r\n\nlast-no-newline"
LINES = ["first line\n", "second line\r\n", "\n", "last-no-newline"]


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(INPUTS, "--threads", "2")


def post(srv, path, body, framing="length", extra_headers=(), timeout=5):
    """POST `body` framed by Content-Length or chunked (split so chunk
    boundaries fall mid-line, which the server must hide from the app)."""
    if framing == "length":
        headers, payload = list(extra_headers), body
    else:
        cuts = [0, 5, 17, 18, len(body)] if len(body) > 18 else [0, len(body)]
        pieces = [body[a:b] for a, b in itertools.pairwise(cuts)]
        headers = [("Transfer-Encoding", "chunked"), *extra_headers]
        payload = chunked(*pieces)
    resp = raw_request(srv.port, "POST", path, headers, payload, timeout=timeout)
    assert resp.status == 200, resp
    return resp.json()


FRAMINGS = ["length", "chunked"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_read_size_returns_at_most_size(srv, framing):
    """PEP 3333: read(size) returns at most `size` bytes; repeated reads
    return the whole body in order, then b'' at the end."""
    body = bytes(range(256)) * 4
    data = post(srv, "/read-n?n=7", body, framing)
    assert all(0 < s <= 7 for s in data["sizes"]), data["sizes"]
    assert data["body"] == body.decode("latin-1")
    assert data["types"] == ["bytes"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_read_without_size_returns_rest(srv, framing):
    """PEP 3333: 'A server should allow read() to be called without an
    argument, and return the remainder of the client's input stream.' Once
    at EOF, read() and read(n) return b''."""
    data = post(srv, "/read-all", BODY, framing)
    assert data["body"] == BODY.decode("latin-1")
    assert data["again"] == "" and data["again_n"] == ""
    assert data["types"] == ["bytes"]


def test_read_past_content_length_is_eof(srv):
    """PEP 3333: the server 'should simulate an end-of-file condition if the
    application attempts to read past' CONTENT_LENGTH, not block."""
    data = post(srv, "/read-past-length", BODY, "length", timeout=5)
    assert data["body"] == BODY.decode("latin-1")
    assert data["more"] == ""


@pytest.mark.parametrize("framing", FRAMINGS)
def test_readline(srv, framing):
    """PEP 3333: readline() returns one line including its terminator; the
    last line may lack one; then b''."""
    data = post(srv, "/readline", BODY, framing)
    assert data["lines"] == LINES
    assert data["types"] == ["bytes"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_readlines(srv, framing):
    """PEP 3333: readlines() returns a list of all lines."""
    data = post(srv, "/readlines", BODY, framing)
    assert data["list"] == "list"
    assert data["lines"] == LINES
    assert data["types"] == ["bytes"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_iteration(srv, framing):
    """PEP 3333: iterating wsgi.input yields its lines."""
    data = post(srv, "/iter", BODY, framing)
    assert data["lines"] == LINES
    assert data["types"] == ["bytes"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_methods_share_position(srv, framing):
    """wsgi.input is one stream: read(3), readline(), read() continue
    from each other."""
    data = post(srv, "/mixed", b"abcdef\nghi\njkl", framing)
    assert data["parts"] == ["abc", "def\n", "ghi\njkl"]


def test_chunked_with_trailers_and_extensions(srv):
    """RFC 9112 7.1: chunk extensions are ignored and trailer fields follow
    the last chunk; the app sees only the payload."""
    payload = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    with RawConnection(srv.port) as c:
        c.send(
            build_request(
                "POST", "/read-all", [("Transfer-Encoding", "chunked")], payload, host="h"
            )
        )
        resp = c.read_response()
    assert resp.status == 200, resp
    assert resp.json()["body"] == "hello world"


def test_empty_body(srv):
    """Content-Length: 0 means no body: read() returns b'' at once."""
    data = post(srv, "/read-all", b"", "length", extra_headers=[("Content-Length", "0")])
    assert data["body"] == "" and data["again"] == ""


def test_unread_body_does_not_become_next_request(srv):
    """RFC 9112 9.3 / 6.3: when the app ignores the body, the server must
    skip it (or close the connection); the body bytes must never be parsed
    as the next request on a keep-alive connection."""
    # The body looks like a request: a server that fails to discard it would
    # answer it (404) instead of the real second request.
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n" * 2000
    with RawConnection(srv.port) as c:
        c.send(build_request("POST", "/noread", [], smuggled, host="h"))
        first = c.read_response()
        assert first.status == 200 and first.json() == {"ignored": True}
        try:
            c.send(build_request("POST", "/read-all", [], b"second", host="h"))
            second = c.read_response()
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            return  # closing the connection is an allowed way to skip the body
        assert second.status == 200, second
        assert second.json()["body"] == "second"


# --- large uploads ----------------------------------------------------------

UPLOAD_MB = 50
BLOCK = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB of non-repeating-ish bytes


def _upload(port, framing, result):
    """Send UPLOAD_MB MiB to /hash in 64 KiB blocks; store the response."""
    n_blocks = UPLOAD_MB * 16
    try:
        with RawConnection(port, timeout=30) as c:
            if framing == "length":
                c.send(
                    build_request(
                        "POST", "/hash", [("Content-Length", str(n_blocks * len(BLOCK)))], host="h"
                    )
                )
                for _ in range(n_blocks):
                    c.send(BLOCK)
            else:
                c.send(build_request("POST", "/hash", [("Transfer-Encoding", "chunked")], host="h"))
                frame = b"%x\r\n" % len(BLOCK) + BLOCK + b"\r\n"
                for _ in range(n_blocks):
                    c.send(frame)
                c.send(b"0\r\n\r\n")
            result["resp"] = c.read_response()
    except Exception as e:  # reported by the test thread
        result["error"] = e


@pytest.mark.parametrize("framing", FRAMINGS)
def test_large_upload_is_streamed(srv, framing):
    """PEP 3333 lets the server feed wsgi.input on demand: a 50 MiB upload
    read in 64 KiB pieces arrives intact, and the server does not hold it
    all in memory (RSS grows by < 40 MB)."""
    post(srv, "/hash", b"warm-up" * 1000)  # settle allocator pools first
    expected = hashlib.sha256()
    for _ in range(UPLOAD_MB * 16):
        expected.update(BLOCK)
    result = {}
    with RssSampler(srv.pid) as rss:
        t = threading.Thread(target=_upload, args=(srv.port, framing, result), daemon=True)
        t.start()
        t.join(timeout=60)
    assert not t.is_alive(), "upload did not finish within 60 s"
    assert "error" not in result, result.get("error")
    resp = result["resp"]
    assert resp.status == 200, resp
    data = resp.json()
    assert data["bytes"] == UPLOAD_MB * 1024 * 1024
    assert data["sha256"] == expected.hexdigest()
    assert data["biggest_piece"] <= 65536
    assert rss.growth_mb < 40, (
        f"server RSS grew by {rss.growth_mb:.1f} MB during a {UPLOAD_MB} MiB upload"
    )


# --- Expect: 100-continue ---------------------------------------------------


def test_expect_100_continue_sent_before_body(srv):
    """RFC 9110 10.1.1 / PEP 3333 'HTTP 1.1 Expect/Continue': a client that
    sends `Expect: 100-continue` waits for '100 Continue' before sending the
    body; the server sends it when the app reads wsgi.input."""
    body = b"payload-after-continue" * 100
    with RawConnection(srv.port) as c:
        c.send(
            build_request(
                "POST",
                "/hash",
                [("Expect", "100-continue"), ("Content-Length", str(len(body)))],
                host="h",
            )
        )
        # No body yet: the only way forward is the interim response.
        _version, _status, _reason, _headers, raw = c.read_head()
        assert raw.startswith(b"HTTP/1.1 100 Continue\r\n"), raw
        c.send(body)
        resp = c.read_response()
    assert resp.status == 200, resp
    data = resp.json()
    assert data["bytes"] == len(body)
    assert data["sha256"] == hashlib.sha256(body).hexdigest()


def test_expect_100_continue_app_that_ignores_body(srv):
    """RFC 9110 10.1.1: a server may answer with the final status instead of
    100 when it does not need the body; it must not wait forever for a body
    the client is holding back."""
    with RawConnection(srv.port) as c:
        c.send(
            build_request(
                "POST",
                "/noread",
                [("Expect", "100-continue"), ("Content-Length", "1000")],
                host="h",
            )
        )
        resp = c.read_response()
        while 100 <= resp.status < 200:
            resp = c.read_response()
    assert resp.status == 200, resp
    assert resp.json() == {"ignored": True}


def test_expect_100_continue_ignored_for_http10(srv):
    """RFC 9110 10.1.1: 'A server that receives a 100-continue expectation in
    an HTTP/1.0 request MUST ignore that expectation' (no 1xx to a 1.0
    client)."""
    body = b"ten bytes!"
    expect = [("Expect", "100-continue")]
    resp = raw_request(srv.port, "POST", "/read-all", expect, body, version="HTTP/1.0")
    assert resp.status == 200, f"expected the final response first, got {resp.status}"
    assert resp.json()["body"] == body.decode()


def test_client_disconnect_mid_upload_frees_worker(srv):
    """A client that promises a body and hangs up halfway must not pin a
    worker until a timeout: the app's read() ends (EOF or an error) and the
    worker is free. More abandoned uploads than the 2 worker threads, then a
    normal request must be served promptly."""
    for _ in range(6):
        with RawConnection(srv.port) as c:
            c.send(build_request("POST", "/hash", [("Content-Length", "1000000")], host="h"))
            c.send(b"partial" * 100)
            time.sleep(0.05)  # let the app start reading
    start = time.monotonic()
    data = post(srv, "/read-all", b"after the abandoned uploads", timeout=10)
    assert data["body"] == "after the abandoned uploads"
    assert time.monotonic() - start < 5, "workers stayed busy with abandoned uploads"


def test_bad_chunk_size_does_not_hang(srv):
    """RFC 9112 7.1: a malformed chunk size is a framing error: the app's
    read fails or ends, the client gets an error response or a closed
    connection, and nothing waits forever."""
    with RawConnection(srv.port) as c:
        c.send(
            build_request(
                "POST",
                "/read-all",
                [("Transfer-Encoding", "chunked")],
                b"zz\r\nhello\r\n0\r\n\r\n",
                host="h",
            )
        )
        try:
            resp = c.read_response()
        except ConnectionClosed:
            resp = None
    if resp is not None:
        assert resp.status in (400, 500), f"a malformed chunked body was accepted: {resp}"
    assert post(srv, "/read-all", b"still fine")["body"] == "still fine"
