"""--request-timeout: a request still in the app past its deadline is answered 504 (or its
connection cut, when the answer had begun), the Python stack of its thread is logged with the
request line, and the thread counts as stuck instead of taking a place among the threads."""

from __future__ import annotations

import re
import urllib.request

import bartizan

from tests.support import RawConnection, raw_request
from tests.support.process import wait_line
from tests.support.raw import ConnectionClosed

STUCK = "tests.apps.stuck:app"


def test_a_stuck_view_gets_504_and_its_stack_is_logged(server):
    """One thread: /stuck waits for ever; at the deadline the client gets 504, the log names
    the request and the view's function, and /ok is still served though the one thread is
    taken."""
    srv = server(STUCK, "--request-timeout", "1", "--threads", "1")
    r = raw_request(srv.port, "GET", "/stuck?q=1")
    assert r.status == 504
    assert b"Traceback" not in r.body
    wait_line(srv, re.compile(r"request timed out after 1 s, answered 504: GET /stuck\?q=1"), 10)
    wait_line(srv, re.compile(r"in wait_in_the_view"), 10)
    assert raw_request(srv.port, "GET", "/ok").body == b"ok"
    assert raw_request(srv.port, "GET", "/stuck-count").body == b"1"
    assert raw_request(srv.port, "GET", "/release").body == b"released"


def test_a_stuck_view_that_never_read_its_body_does_not_hold_the_connection(server):
    """POST of 1 MiB to a view stuck before reading it: the 504 says Connection: close and the
    connection closes, instead of waiting on a body nobody will read."""
    srv = server(STUCK, "--request-timeout", "1")
    body = b"b" * (1 << 20)
    with RawConnection(srv.port) as c:
        c.send(b"POST /stuck HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body))
        try:
            c.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        assert (r.status, r.header("Connection")) == (504, "close")
        assert c.is_closed_by_peer(10)
    assert raw_request(srv.port, "GET", "/release").body == b"released"


def test_a_stream_that_stalls_past_the_deadline_is_cut(server):
    """The answer had begun: the client gets what was sent, then the connection closes
    without the end of the chunked body; the log says the connection was cut."""
    srv = server(STUCK, "--request-timeout", "1")
    with RawConnection(srv.port) as c:
        c.send(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_head()[1] == 200
        rest = c.read_to_eof(10)
    assert b"first" in rest and not rest.endswith(b"0\r\n\r\n")
    wait_line(srv, re.compile(r"request timed out after 1 s, its connection cut: GET /stream"), 10)
    assert raw_request(srv.port, "GET", "/release").body == b"released"


def test_without_a_timeout_nothing_is_cut(server):
    srv = server(STUCK, "--threads", "2")
    with RawConnection(srv.port) as c:
        c.send(b"GET /stuck HTTP/1.1\r\nHost: h\r\n\r\n")
        c.settimeout(2)
        try:
            c.read_some()
            raise AssertionError("answered while the view still waits")
        except (TimeoutError, ConnectionClosed):
            pass
        assert raw_request(srv.port, "GET", "/release").body == b"released"
        c.settimeout(10)
        assert c.read_response().body == b"late"


def test_the_embedding_api_and_the_metrics_count_stuck_requests():
    from tests.apps import stuck

    with bartizan.Server(stuck.app, port=0, request_timeout=0.5, threads=1) as s:
        base = f"http://127.0.0.1:{s.port}"
        try:
            urllib.request.urlopen(base + "/stuck", timeout=10)
            raise AssertionError("no 504")
        except urllib.error.HTTPError as e:
            assert e.code == 504
        assert s.stuck == (1, 1)
        text = s.metrics_text()
        assert "bartizan_stuck_requests 1" in text
        assert "bartizan_stuck_requests_total 1" in text
        urllib.request.urlopen(base + "/release", timeout=10).read()
        s.drain(10)
        assert s.stuck == (0, 1)
