"""The response side of WSGI (PEP 3333 "The start_response() Callable",
"Buffering and Streaming", "Optional Platform-Specific File Handling") and
HTTP/1.1 connection handling (RFC 9112: persistence, pipelining, framing)."""

import json
import os
import socket
import struct
import threading
import time
from urllib.parse import quote

import pytest

from tests.support import (
    ConnectionClosed,
    RawConnection,
    RssSampler,
    build_request,
    open_paths,
    raw_request,
    read_marker_file,
    wait_for,
)

RESPONSES = "tests.apps.responses:app"


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server(RESPONSES, "--threads", "4")


def get(srv, target, method="GET", version="HTTP/1.1", headers=()):
    return raw_request(srv.port, method, target, headers, version=version)


def q(path):
    return quote(str(path), safe="")


# --- start_response / write() ----------------------------------------------


def test_write_callable(srv):
    """PEP 3333: start_response returns write(body_data); data written
    through it is sent before the returned iterable's, in order; empty
    strings are allowed and send nothing."""
    resp = get(srv, "/write")
    assert resp.status == 200
    assert resp.body == b"hello world!"


def test_exc_info_replaces_status_before_headers_sent(srv):
    """PEP 3333: start_response may be called again with exc_info if no
    headers were sent yet; the new status and headers replace the old."""
    resp = get(srv, "/exc-info-replace")
    assert resp.status == 503, resp
    assert resp.header("X-Second") == "1"
    assert resp.header("X-First") is None, "headers of the first start_response must be discarded"
    assert resp.body == b"replaced"


def test_second_start_response_without_exc_info_raises(srv):
    """PEP 3333: 'it is a fatal error to call start_response without the
    exc_info argument if start_response has already been called'; the
    first status stays."""
    resp = get(srv, "/start-twice-no-exc-info")
    assert resp.status == 200, resp
    assert resp.body.startswith(b"raised "), resp.body


# --- streaming ---------------------------------------------------------------


def test_generator_output_is_not_buffered(srv, tmp_path):
    """PEP 3333 'Buffering and Streaming': each yielded block is sent before
    the next is requested. The app yields 'first', then waits for a file the
    test creates only after it has received 'first'."""
    go = tmp_path / "go"
    with RawConnection(srv.port, timeout=3) as c:
        c.send(build_request("GET", f"/stream?go={q(go)}", host="h"))
        _version, status, _reason, headers, _ = c.read_head()
        assert status == 200
        c.read_until(b"first\n")  # times out (fails) if the server holds it back
        assert b"second" not in c.buf
        go.touch()
        c.read_until(b"second\n")
        if any(k.lower() == "transfer-encoding" for k, _ in headers):
            c.read_until(b"0\r\n\r\n")  # the stream is properly terminated


def _drain(conn, head_headers, pause_after=None, pause=0.0):
    """Count body bytes without keeping them (Content-Length or chunked),
    optionally stopping to read for `pause` seconds after `pause_after` bytes."""
    hdr = {k.lower(): v for k, v in head_headers}
    total = 0
    paused = pause_after is None

    def maybe_pause():
        nonlocal paused
        if not paused and total >= pause_after:
            paused = True
            time.sleep(pause)

    if "chunked" in hdr.get("transfer-encoding", "").lower():
        while True:
            size = int(conn.read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                conn.read_until(b"\r\n")
                return total
            left = size
            while left:
                if not conn.buf:
                    conn._fill()
                take = min(left, len(conn.buf))
                conn.buf = conn.buf[take:]
                left -= take
                total += take
            assert conn.read_exact(2) == b"\r\n"
            maybe_pause()
    n = int(hdr["content-length"])
    while total < n:
        if not conn.buf:
            conn._fill()
        take = min(n - total, len(conn.buf))
        conn.buf = conn.buf[take:]
        total += take
        maybe_pause()
    return total


@pytest.mark.parametrize("cl", ["1", "0"], ids=["content-length", "chunked"])
def test_large_generator_bounded_memory(srv, cl):
    """PEP 3333 'Buffering and Streaming': a 200 MiB generator response is
    streamed with backpressure. The client stops reading for 1.5 s midway;
    a server that buffered the app's output instead of waiting for the
    socket would grow by the whole response. RSS growth must stay < 60 MB."""
    size = 200 * 1024 * 1024
    get(srv, "/big?size=1000000&cl=1")  # warm-up
    with RssSampler(srv.pid) as rss:
        with RawConnection(srv.port, timeout=10) as c:
            c.send(build_request("GET", f"/big?size={size}&cl={cl}", host="h"))
            _, status, _, headers, _ = c.read_head()
            assert status == 200
            got = _drain(c, headers, pause_after=1 << 20, pause=1.5)
    assert got == size
    assert rss.growth_mb < 60, f"server RSS grew by {rss.growth_mb:.1f} MB serving {size >> 20} MiB"


# --- close() -------------------------------------------------------------------


def test_close_called_after_normal_completion(srv, tmp_path):
    """PEP 3333: if the iterable has close(), the server calls it when the
    request completes."""
    marker = tmp_path / "closed.json"
    resp = get(srv, f"/close?marker={q(marker)}")
    assert resp.status == 200 and resp.body == b"part\n" * 3
    text = read_marker_file(marker, 5)
    assert text is not None, "close() was not called within 5 s"
    assert json.loads(text) == {"sent": 3, "finished": True}


def test_close_called_when_client_disconnects(srv, tmp_path):
    """PEP 3333: close() is called even when the request 'terminated early
    due to ... an early disconnect of the browser'. The client reads a bit of
    a long stream and hangs up; the app must be stopped and closed."""
    marker = tmp_path / "closed.json"
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        s.sendall(build_request("GET", f"/close-slow?marker={q(marker)}", host="h"))
        got = b""
        while len(got) < 100_000:
            chunk = s.recv(65536)
            assert chunk, "server closed before sending data"
            got += chunk
        # RST instead of FIN, like a browser tab being closed.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()
    text = read_marker_file(marker, 10)
    assert text is not None, "close() not called within 10 s of the client disconnecting"
    state = json.loads(text)
    assert state["finished"] is False, f"app ran to completion instead of being stopped: {state}"
    # Not much more than what was produced before the write failures were seen.
    assert state["sent"] < 1000, state


def test_close_called_for_head(srv, tmp_path):
    """PEP 3333: close() is called however the request ends, including HEAD,
    where the body is not sent."""
    marker = tmp_path / "closed.json"
    resp = get(srv, f"/close-head?marker={q(marker)}", method="HEAD")
    assert resp.status == 200 and resp.body == b""
    assert read_marker_file(marker, 5) is not None, "close() not called for a HEAD request"


# --- wsgi.file_wrapper ----------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(1_000_003)
    p = tmp_path / "payload.bin"
    p.write_bytes(data)
    return p, data


@pytest.mark.parametrize("cl", ["1", "0"], ids=["content-length", "no-length"])
def test_file_wrapper_serves_file_and_closes_it(srv, data_file, cl):
    """PEP 3333 'Optional Platform-Specific File Handling': the object from
    wsgi.file_wrapper(filelike, blksize) is iterable and yields the file's
    bytes; its close() closes the file (checked via /proc/PID/fd)."""
    path, data = data_file
    resp = get(srv, f"/file?path={q(path)}&cl={cl}")
    assert resp.status == 200
    assert len(resp.body) == len(data) and resp.body == data
    assert wait_for(lambda: str(path) not in open_paths(srv.pid), 5), (
        "served file still open in the server"
    )


def test_file_wrapper_starts_at_current_position(srv, data_file):
    """PEP 3333: 'transmission should begin at the current position within
    the file at the time that transmission begins'."""
    path, data = data_file
    resp = get(srv, f"/file-offset?path={q(path)}&offset=12345")
    assert resp.status == 200
    assert resp.body == data[12345:]


def test_file_wrapper_accepts_read_only_filelike(srv, tmp_path):
    """PEP 3333: file_wrapper must accept any object with read(); its
    close() must call the object's close() if it has one."""
    marker = tmp_path / "filelike-closed"
    resp = get(srv, f"/filelike?marker={q(marker)}")
    assert resp.status == 200
    assert resp.body == b"from a read()-only object\n" * 1000
    assert read_marker_file(marker, 5) == "closed", "file_wrapper did not call the object's close()"


# --- Content-Length and framing ----------------------------------------------


def test_content_length_from_app_is_used(srv):
    """PEP 3333 / RFC 9112 6.3: the app's Content-Length frames the body; the
    server does not add chunked coding on top."""
    resp = get(srv, "/content-length-exact")
    assert resp.header("Content-Length") == "11"
    assert resp.header("Transfer-Encoding") is None
    assert resp.body == b"hello world"


def test_no_more_than_content_length_is_sent(srv):
    """PEP 3333: 'the server should not transmit more bytes to the client
    than the header allows'. Extra bytes would be read as the start of the
    next response on the same connection."""
    with RawConnection(srv.port) as c:
        c.send(build_request("GET", "/content-length-short", host="h"))
        first = c.read_response()
        assert first.body == b"hello"
        try:
            c.send(build_request("GET", "/next", host="h"))
            second = c.read_response()
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            assert c.buf == b"", f"extra bytes after Content-Length: {c.buf!r}"
            return
        assert second.status == 200 and second.body == b"/next"


def test_short_body_closes_connection(srv):
    """RFC 9112 6.3 / 9.6: a response whose body is shorter than its
    Content-Length cannot be completed; the server closes the connection
    (promptly) so the client sees the truncation, after transmitting what
    the app did yield (PEP 3333 'Buffering and Streaming'). Answering 500
    instead, before anything was sent, is also correct. Repeated because
    losing the already-yielded bytes is timing-dependent."""
    tries = 100
    problems = []
    for i in range(tries):
        with RawConnection(srv.port) as c:
            c.send(build_request("GET", "/content-length-missing-bytes", host="h"))
            try:
                resp = c.read_response()
            except ConnectionClosed:
                problems.append(f"try {i}: closed without any response head")
                continue
        if resp.status == 500:
            continue
        assert resp.status == 200
        assert resp.complete is False, "a truncated response must not look complete"
        if resp.body != b"short":
            problems.append(f"try {i}: got body {resp.body!r}")
    assert not problems, (
        f"{len(problems)} of {tries} truncated responses lost the yielded bytes: {problems[:5]}"
    )


def _next_request_or_announced_close(c, first, target):
    """After `first`, the connection must either carry the next request
    correctly, or have been announced closed ('Connection: close') and then
    closed with nothing more sent (RFC 9112 9.6)."""
    if (first.header("Connection") or "").lower() == "close":
        assert c.is_closed_by_peer(5)
        return
    c.send(build_request("GET", target, host="h"))
    after = c.read_response()
    assert after.status == 200 and after.body == target.encode()


def test_empty_iterable_is_framed(srv):
    """An empty body is still a complete, framed response (Content-Length: 0
    or a terminated chunked body); nothing stray follows it."""
    with RawConnection(srv.port) as c:
        c.send(build_request("GET", "/empty", host="h"))
        first = c.read_response()
        assert first.status == 200 and first.body == b"" and first.complete
        _next_request_or_announced_close(c, first, "/after-empty")


def test_204_has_no_body(srv):
    """RFC 9110 15.3.5 / RFC 9112 6.3: a 204 response ends after its header
    block: no body, no chunked coding or terminator that would desync the
    connection."""
    with RawConnection(srv.port) as c:
        c.send(build_request("GET", "/status?code=204%20No%20Content", host="h"))
        resp = c.read_response()
        assert resp.status == 204
        assert resp.header("Transfer-Encoding") is None
        _next_request_or_announced_close(c, resp, "/after-204")


def test_response_headers_on_the_wire(srv):
    """PEP 3333: each header tuple is sent as its own field line, so two
    Set-Cookie headers stay two lines (RFC 6265 3: they must not be folded
    into one); header values are str sent as latin-1 ('Unicode Issues')."""
    with RawConnection(srv.port) as c:
        c.send(build_request("GET", "/headers", host="h"))
        resp = c.read_response()
    assert resp.header_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    raw_values = [
        line.split(b":", 1)[1].strip()
        for line in resp.raw_head.split(b"\r\n")[1:]
        if line.lower().startswith(b"x-latin:")
    ]
    assert raw_values == [b"caf\xe9"], raw_values


def test_concurrent_requests_get_their_own_responses(srv):
    """With several worker threads busy at once (wsgi.multithread), each
    client still gets exactly the response to its own request."""
    n = 40
    results = {}

    def one(i):
        try:
            with RawConnection(srv.port, timeout=10) as c:
                results[i] = c.request("GET", f"/sleep?t=0.05&n={i}").body
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "requests hung"
    wrong = {i: r for i, r in results.items() if r != f"/sleep?t=0.05&n={i}".encode()}
    assert not wrong and len(results) == n, wrong


def test_date_header(srv):
    """RFC 9110 6.6.1: an origin server with a clock MUST send Date."""
    resp = get(srv, "/x")
    assert resp.header("Date"), resp.headers


def test_http10_unsized_response_not_chunked(srv):
    """RFC 9112 7.1: chunked coding must not be sent to an HTTP/1.0 client;
    an unsized body is delimited by closing the connection instead."""
    resp = get(srv, "/big?size=100000&cl=0", version="HTTP/1.0")
    assert resp.status == 200
    assert "chunked" not in (resp.header("Transfer-Encoding") or "")
    assert len(resp.body) == 100000


# --- persistence and pipelining --------------------------------------------------


def test_keep_alive_two_requests_one_socket(srv):
    """RFC 9112 9.3: HTTP/1.1 connections persist by default: two requests in
    sequence on one socket both get answered."""
    with RawConnection(srv.port) as c:
        r1 = c.request("GET", "/one")
        assert r1.header("Connection", "").lower() != "close"
        r2 = c.request("GET", "/two")
    assert (r1.status, r1.body) == (200, b"/one")
    assert (r2.status, r2.body) == (200, b"/two")


def test_pipelined_requests_answered_in_order(srv):
    """RFC 9112 9.3.2: a server may receive several requests in one write
    and must answer them in the order received. The first one is the
    slowest, so out-of-order answering would show."""
    reqs = b"".join(
        build_request("GET", target, host="h")
        for target in ("/sleep?t=0.4&n=1", "/sleep?t=0&n=2", "/sleep?t=0.1&n=3")
    )
    with RawConnection(srv.port) as c:
        c.send(reqs)
        bodies = [c.read_response().body for _ in range(3)]
    assert bodies == [b"/sleep?t=0.4&n=1", b"/sleep?t=0&n=2", b"/sleep?t=0.1&n=3"]


def test_http10_without_keep_alive_closes(srv):
    """RFC 9112 9.3: an HTTP/1.0 request without 'Connection: keep-alive'
    does not persist: the server closes after the response."""
    with RawConnection(srv.port) as c:
        c.send(build_request("GET", "/ten", version="HTTP/1.0"))
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"/ten"
        assert c.is_closed_by_peer(5), "connection left open after an HTTP/1.0 response"


def test_connection_close_honoured(srv):
    """RFC 9112 9.6: after a request with 'Connection: close' the server
    sends 'Connection: close' and closes the connection."""
    with RawConnection(srv.port) as c:
        c.send(build_request("GET", "/bye", [("Connection", "close")], host="h"))
        resp = c.read_response()
        assert resp.body == b"/bye"
        assert resp.header("Connection", "").lower() == "close"
        assert c.is_closed_by_peer(5)
