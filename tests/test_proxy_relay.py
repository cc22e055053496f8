"""The proxy front's plain HTTP/1.1 relay: bodiless GETs and HEADs go upstream without
hyper's request and response objects, and the answer comes back as the upstream framed it.

The upstream here is `ScriptedUpstream`, which writes exactly the bytes a test gives, so
every framing an app server might send (chunked with trailers, a 1xx first, a body that
runs until close, a misframed head) is met on the wire. What the relay does not take (a
body, a refused head) goes to the hyper path on the same connection; the tests cross that
line both ways, and compare what the upstream is sent by the relay with what the hyper path
sends for the same request.
"""

import pytest

from tests.support import RawConnection, build_request, free_port
from tests.support.proxy import ScriptedUpstream, start_proxy

CHUNKED_BODY = b"5\r\nhello\r\n6;note=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n"


def echo(head, body):
    """The request as the upstream read it, as the answer's body."""
    seen = head + b"\r\n\r\n" + body
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(seen) + seen


ANSWERS = {
    "/plain": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    "/echo": echo,
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY,
    "/early": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"
    ),
    "/until-close": (b"HTTP/1.1 200 OK\r\n\r\nall of it, then the close", True),
    "/closing": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye", True),
    "/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "/bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
    "/cut": (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", True),
    "/broken-chunks": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nno", True),
    "/hop": (
        b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
        b"X-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
    ),
    "/flaky": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsent",
    "/nothing": b"HTTP/1.1 204 No Content\r\nX-Kept: yes\r\n\r\n",
}


@pytest.fixture
def upstream():
    up = ScriptedUpstream(ANSWERS)
    yield up
    up.close()


@pytest.fixture
def front(server, upstream):
    return start_proxy(server, [upstream.address])


def connect(proxy):
    return RawConnection(proxy.port)


# --- answers, as the upstream framed them ------------------------------------------------


def test_a_chunked_answer_passes_with_its_trailers_byte_for_byte(front):
    with connect(front) as c:
        c.send(build_request("GET", "/chunked"))
        _version, status, _reason, headers, _head = c.read_head()
        assert status == 200
        assert ("Transfer-Encoding", "chunked") in headers
        assert c.read_exact(len(CHUNKED_BODY)) == CHUNKED_BODY
        # The chunked body ended where its trailers did: the next answer is read whole.
        r = c.request("GET", "/plain")
        assert (r.status, r.body) == (200, b"ok")


def test_an_interim_answer_is_read_past(front):
    with connect(front) as c:
        r = c.request("GET", "/early")
        assert (r.status, r.body) == (200, b"after")
        assert not r.has_header("Link")


def test_an_answer_that_runs_until_close_closes_the_client_after_it(front):
    with connect(front) as c:
        r = c.request("GET", "/until-close")
        assert (r.status, r.body) == (200, b"all of it, then the close")
        assert r.header("Connection") == "close"
        assert c.is_closed_by_peer()


def test_an_upstream_that_says_close_is_not_asked_again(front, upstream):
    with connect(front) as c:
        r = c.request("GET", "/closing")
        assert (r.status, r.body) == (200, b"bye")
        # Its close is the upstream's hop, not the client's.
        assert not r.has_header("Connection")
        r = c.request("GET", "/plain")
        assert (r.status, r.body) == (200, b"ok")
    assert upstream.connections == 2


def test_a_misframed_answer_is_a_502_and_the_client_is_served_on(front):
    with connect(front) as c:
        for path in ("/two-lengths", "/bad-length"):
            r = c.request("GET", path)
            assert r.status == 502, r
            assert r.body == b"502 Bad Gateway\n"
            assert r.header("Date", "").endswith(" GMT"), r.headers
        r = c.request("GET", "/plain")
        assert (r.status, r.body) == (200, b"ok")


@pytest.mark.parametrize("path", ["/cut", "/broken-chunks"])
def test_an_answer_cut_short_ends_the_clients_connection(front, path):
    with connect(front) as c:
        r = c.request("GET", path)
        assert r.status == 200
        assert not r.complete
    with connect(front) as c:
        assert c.request("GET", "/plain").status == 200


def test_an_answers_hop_fields_stay_behind(front):
    with connect(front) as c:
        r = c.request("GET", "/hop")
        assert (r.status, r.body) == (200, b"ok")
        assert r.header("X-Kept") == "yes"
        for name in ("X-Secret", "Keep-Alive", "Connection"):
            assert not r.has_header(name), r.headers
        # Sent undated, it is dated on its way (RFC 9110 6.6.1).
        assert r.header("Date", "").endswith(" GMT"), r.headers


def test_head_and_204_carry_no_body(front):
    with connect(front) as c:
        r = c.request("HEAD", "/plain")
        assert (r.status, r.header("Content-Length"), r.body) == (200, "2", b"")
        r = c.request("GET", "/nothing")
        assert (r.status, r.header("X-Kept")) == (204, "yes")
        r = c.request("GET", "/plain")
        assert (r.status, r.body) == (200, b"ok")


def test_a_get_whose_connection_died_unanswered_is_sent_again(front, upstream):
    upstream.drop["/flaky"] = 2
    with connect(front) as c:
        r = c.request("GET", "/flaky")
        assert (r.status, r.body) == (200, b"sent")
    assert len(upstream.requests_for("/flaky")) == 3


# --- the client's side: the relay and the full path on one connection --------------------


def test_one_connection_crosses_from_the_relay_to_the_full_path(front, upstream):
    with connect(front) as c:
        assert c.request("GET", "/plain").status == 200
        r = c.request("POST", "/echo", [("Content-Type", "text/plain")], b"a body")
        assert r.status == 200
        assert r.body.endswith(b"\r\n\r\na body")
        assert c.request("GET", "/plain").status == 200
    posted = upstream.requests_for("/echo")
    assert [b for _h, b in posted] == [b"a body"]


def test_pipelined_requests_are_answered_in_order(front):
    with connect(front) as c:
        c.send(build_request("GET", "/chunked") + build_request("GET", "/plain"))
        first = c.read_response()
        second = c.read_response()
        assert (first.status, first.body) == (200, b"hello world")
        assert (second.status, second.body) == (200, b"ok")


def test_a_refused_head_after_a_relayed_one_gets_its_error(front):
    with connect(front) as c:
        assert c.request("GET", "/plain").status == 200
        c.send(b"GET /plain HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, r
        assert c.is_closed_by_peer()


def test_a_client_that_says_close_is_closed_after_its_answer(front):
    with connect(front) as c:
        r = c.request("GET", "/plain", [("Connection", "close")])
        assert (r.status, r.header("Connection")) == (200, "close")
        assert c.is_closed_by_peer()


def test_an_idle_connection_is_closed_after_the_keep_alive_wait(server, upstream):
    proxy = start_proxy(server, [upstream.address], "--keep-alive", "1")
    with connect(proxy) as c:
        assert c.request("GET", "/plain").status == 200
        assert c.is_closed_by_peer(timeout=10)


def test_a_head_that_never_ends_is_cut_off(server, upstream):
    proxy = start_proxy(server, [upstream.address], "--header-timeout", "1")
    with connect(proxy) as c:
        assert c.request("GET", "/plain").status == 200
        c.send(b"GET /plain HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        assert c.is_closed_by_peer(timeout=10)


# --- what the upstream is sent: the relay against the full path ---------------------------


def upstream_head(proxy, upstream, raw, full_path):
    """The head the upstream read for the request `raw` sent through `proxy`: its request
    line, and its fields as lower-cased names and values, sorted. With `full_path`, a POST
    goes first on the connection, which hands it to the full path for good."""
    before = len(upstream.requests_for("/echo"))
    with connect(proxy) as c:
        if full_path:
            assert c.request("POST", "/plain", body=b"x").status == 200
        c.send(raw)
        r = c.read_response("HEAD" if raw.startswith(b"HEAD") else "GET")
        assert r.status == 200, r
    head = upstream.requests_for("/echo")[before][0].decode("latin-1").split("\r\n")
    fields = sorted(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in head[1:])
    )
    return head[0], fields


@pytest.mark.parametrize("trust", ["127.0.0.1", ""])
@pytest.mark.parametrize(
    "raw",
    [
        b"GET /echo HTTP/1.1\r\nHost: game.example:8000\r\nAccept: */*\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nhost: Game.Example\r\nconnection: keep-alive\r\n"
        b"cookie: a=1; b=2\r\nuser-agent: relay-test\r\n\r\n",
        b"HEAD /echo HTTP/1.1\r\nHost: [::1]:8000\r\nConnection: close\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: a;for=evil\r\nX-Real-IP: 6.6.6.6\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n",
    ],
)
def test_the_upstream_is_sent_what_the_full_path_sends(server, upstream, raw, trust):
    proxy = start_proxy(server, [upstream.address], "--trusted-proxies", trust)
    relayed = upstream_head(proxy, upstream, raw, full_path=False)
    assert relayed == upstream_head(proxy, upstream, raw, full_path=True)


def test_fields_go_upstream_as_the_client_wrote_them(front, upstream):
    """The relay copies each field as written, name and all, as nginx does; only the fields
    of this hop are left out and the forwarding fields added."""
    with connect(front) as c:
        r = c.request(
            "GET", "/echo", [("X-CuStom-Name", "Mixed  Case"), ("Connection", "keep-alive")]
        )
        assert r.status == 200
    head = upstream.requests_for("/echo")[-1][0]
    assert b"\r\nX-CuStom-Name: Mixed  Case" in head
    assert b"onnection" not in head
    assert b"\r\nX-Forwarded-For: 127.0.0.1" in head


def test_an_error_page_for_a_head_has_no_body(server):
    """With no upstream to ask, a HEAD gets the 503's head alone, and the connection reads on
    at the next answer."""
    proxy = start_proxy(server, [f"127.0.0.1:{free_port()}"], "--upstream-wait", "0.2")
    with connect(proxy) as c:
        r = c.request("HEAD", "/plain")
        assert (r.status, r.header("Retry-After"), r.body) == (503, "1", b""), r
        r = c.request("GET", "/plain")
        assert (r.status, r.body) == (503, b"503 Service Unavailable\n"), r
