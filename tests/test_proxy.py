"""The reverse-proxy front: `python -m bartizan proxy --upstream HOST:PORT ...`.

Real processes throughout: the proxy and one or more app servers on
loopback ports. The app (tests/apps/proxied.py) reports what reached it.
Two upstream views are used:

- a "raw" app server that trusts nobody (`--trusted-proxies ""`), so its
  environ shows the headers exactly as the proxy sent them;
- a "trusting" app server with the default trust list (127.0.0.1, ::1),
  which believes the proxy's forwarding headers.
"""

import hashlib
import http.client
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass

import pytest

from tests.apps.proxied import download_bytes
from tests.apps.ws_echo import WsEchoServer
from tests.support import (
    PROXY_LINE_RE,
    RawConnection,
    RssSampler,
    build_request,
    can_bind_source,
    chunked,
    free_port,
    kill_now,
    raw_request,
)
from tests.support.apps import RECORDER
from tests.support.proxy import (
    make_self_signed,
    start_app,
    start_proxy,
    upstream_of,
    ws_handshake,
    ws_recv,
    ws_send,
)

TEN_MB = 10 * 1024 * 1024


@dataclass
class Stack:
    raw_app: object
    raw_proxy: object
    trusting_app: object
    trusting_proxy: object


@pytest.fixture(scope="module")
def stack(module_server):
    raw_app = start_app(module_server, 0, "--threads", "8", "--trusted-proxies", "", tag="raw")
    trusting_app = start_app(module_server, 0, "--threads", "8", tag="trusting")
    return Stack(
        raw_app=raw_app,
        raw_proxy=start_proxy(module_server, [upstream_of(raw_app)]),
        trusting_app=trusting_app,
        trusting_proxy=start_proxy(module_server, [upstream_of(trusting_app)]),
    )


def get_env(proxy, target="/", headers=(), method="GET", body=b""):
    r = raw_request(proxy.port, method, target, headers, body)
    assert r.status == 200, r
    return r.json()["environ"]


def forwarded_elements(value):
    """Parse a Forwarded value into a list of {name: value} (quotes removed).
    Good enough for the values the proxy writes (no commas or semicolons
    inside quotes)."""
    out = []
    for element in value.split(","):
        params = {}
        for pair in element.split(";"):
            pair = pair.strip()
            if not pair:
                continue
            name, _, val = pair.partition("=")
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            params[name.strip().lower()] = val
        out.append(params)
    return out


# --- start line, request line, headers -------------------------------------------------


def test_start_line(stack):
    """The proxy announces itself with one stderr line:
    `bartizan: proxy listening on http://127.0.0.1:PORT -> UPSTREAM`."""
    p = stack.raw_proxy
    m = PROXY_LINE_RE.match(p.start_line)
    assert m, p.start_line
    assert p.url.startswith("http://127.0.0.1:") and p.port > 0
    assert p.upstreams == [upstream_of(stack.raw_app)]


TARGETS = [
    "/a%2Fb/%7e?x=%20&y=a+b&z",
    "/caf%C3%A9/%7E%7e;p=1?q=%E2%82%AC&empty=&&x=%2B",
    "/double//slash/x%3Fy?a=b%26c&a=%3D",
    "/plain?weird='!*()",
]


@pytest.mark.parametrize("target", TARGETS)
def test_target_forwarded_byte_for_byte(stack, target):
    """Path and query reach the app exactly as the client sent them: no
    decoding, re-quoting or case change of percent escapes (RAW_URI equals
    the request target)."""
    env = get_env(stack.raw_proxy, target)
    assert env["RAW_URI"] == target
    assert env["QUERY_STRING"] == target.partition("?")[2]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"])
def test_method_forwarded(stack, method):
    """The request method (including an extension method) reaches the app
    unchanged, and a request body comes with it."""
    body = b"body-for-" + method.encode()
    r = raw_request(stack.raw_proxy.port, method, "/m", [("Content-Type", "text/plain")], body)
    assert r.status == 200, r
    env = r.json()["environ"]
    assert env["REQUEST_METHOD"] == method
    assert env.get("CONTENT_LENGTH") == str(len(body))


def test_head_then_get_on_one_connection(stack):
    """A HEAD answer through the proxy has no body, so a GET that follows on
    the same client connection is read correctly (framing kept)."""
    with RawConnection(stack.raw_proxy.port) as c:
        r = c.request("HEAD", "/head")
        assert r.status == 200 and r.body == b""
        r = c.request("GET", "/after-head")
        assert r.status == 200
        assert r.json()["environ"]["PATH_INFO"] == "/after-head"


def test_hop_by_hop_headers_dropped(stack):
    """RFC 9110 7.6.1: Connection and the headers it names, Keep-Alive, TE,
    Trailer, Upgrade (when not upgrading) and Proxy-Connection are not
    forwarded; end-to-end headers are."""
    env = get_env(
        stack.raw_proxy,
        "/hop",
        [
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "must-not-pass"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Kept", "yes"),
        ],
    )
    for key in (
        "HTTP_X_SECRET_HOP",
        "HTTP_KEEP_ALIVE",
        "HTTP_TE",
        "HTTP_TRAILER",
        "HTTP_UPGRADE",
        "HTTP_PROXY_CONNECTION",
    ):
        assert key not in env, f"hop-by-hop {key} was forwarded: {env[key]!r}"
    assert "x-secret-hop" not in env.get("HTTP_CONNECTION", "").lower()
    assert env["HTTP_X_KEPT"] == "yes"


def test_response_headers_and_status_pass_through(stack):
    """The app's status, headers and body come back unchanged (apart from
    hop-by-hop headers)."""
    r = raw_request(stack.raw_proxy.port, "GET", "/sleep?s=0")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert json.loads(r.body) == {"slept": True, "tag": "raw"}


def test_forwarding_headers_appended(stack):
    """The proxy keeps Host, appends the client to X-Forwarded-For, sets
    X-Forwarded-Proto and X-Forwarded-Host, and appends a Forwarded element
    `for=CLIENT;proto=http;host="HOST"` after any the client sent."""
    host = "myhost.example:1234"
    env = get_env(
        stack.raw_proxy,
        "/fwd",
        [("Host", host), ("X-Forwarded-For", "10.1.1.1"), ("Forwarded", "for=10.1.1.1")],
    )
    assert env["HTTP_HOST"] == host, "Host is kept, not replaced by the upstream address"
    assert env["HTTP_X_FORWARDED_FOR"] == "10.1.1.1, 127.0.0.1"
    assert env["HTTP_X_FORWARDED_PROTO"] == "http"
    assert env["HTTP_X_FORWARDED_HOST"] == host
    elements = forwarded_elements(env["HTTP_FORWARDED"])
    assert elements[0] == {"for": "10.1.1.1"}, env["HTTP_FORWARDED"]
    assert elements[-1] == {"for": "127.0.0.1", "proto": "http", "host": host}, env[
        "HTTP_FORWARDED"
    ]
    assert len(elements) == 2

    env = get_env(stack.raw_proxy, "/fwd", [("Host", host)])
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert forwarded_elements(env["HTTP_FORWARDED"]) == [
        {"for": "127.0.0.1", "proto": "http", "host": host}
    ]


def from_untrusted(stack, path, headers):
    """A request to the proxy from a client it does not trust (127.0.0.2)."""
    with RawConnection(stack.trusting_proxy.port, source="127.0.0.2") as c:
        return c.request("GET", path, headers)


@pytest.mark.skipif(not can_bind_source("127.0.0.2"), reason="cannot bind a socket to 127.0.0.2")
def test_client_cannot_claim_https_or_host(stack):
    """X-Forwarded-Proto and X-Forwarded-Host from a client the proxy does not
    trust (127.0.0.2) are replaced by the proxy's own: over plain HTTP the app
    behind it sees scheme http and the real Host."""
    claims = [
        ("Host", "real.example"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "443"),
    ]
    r = from_untrusted(stack, "/claim", claims)
    env = r.json()["environ"]
    assert env["HTTP_X_FORWARDED_PROTO"] == "http"
    assert env["wsgi.url_scheme"] == "http"
    assert "HTTPS" not in env
    assert "HTTP_X_FORWARDED_PORT" not in env
    assert env["HTTP_HOST"] == "real.example"
    assert env["SERVER_NAME"] == "real.example"


def test_a_trusted_tls_front_keeps_https(stack):
    """Behind a TLS front it trusts (nginx on 127.0.0.1 saying X-Forwarded-For,
    X-Forwarded-Proto https), the proxy passes the front's word on: the app
    sees the client, https and the public host."""
    env = get_env(
        stack.trusting_proxy,
        "/tls-front",
        [
            ("Host", "game.example"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "game.example"),
        ],
    )
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    assert env["SERVER_NAME"] == "game.example"


def test_a_host_header_cannot_smuggle_a_forwarded_element(stack):
    """A Host with quotes and separators never reaches the Forwarded element:
    the app still sees the real peer."""
    env = get_env(stack.trusting_proxy, "/smuggle", [("Host", 'x";for=6.6.6.6, for="1.1.1.1')])
    assert env["REMOTE_ADDR"] == "127.0.0.1", env["HTTP_FORWARDED"]
    assert "6.6.6.6" not in env["HTTP_FORWARDED"]


@pytest.mark.skipif(not can_bind_source("127.0.0.2"), reason="cannot bind a socket to 127.0.0.2")
def test_spoofed_client_address_end_to_end(stack):
    """client (127.0.0.2) -> proxy -> app trusting only loopback 127.0.0.1:
    the client's own X-Forwarded-For / Forwarded claims (6.6.6.6, https,
    evil.example) lose to what the proxy appends: REMOTE_ADDR is 127.0.0.2,
    scheme http, host the real one."""
    claims = {
        "Host": "real.example",
        "X-Forwarded-For": "6.6.6.6",
        "Forwarded": 'for=6.6.6.6;proto=https;host="evil.example"',
        "X-Forwarded-Proto": "https",
    }
    r = from_untrusted(stack, "/spoof", list(claims.items()))
    assert r.status == 200, r
    env = r.json()["environ"]
    assert env["REMOTE_ADDR"] == "127.0.0.2", (
        f"spoofed client address believed: {env['HTTP_FORWARDED']!r}"
    )
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "real.example"

    r = from_untrusted(stack, "/spoof", [("X-Forwarded-For", "6.6.6.6")])
    assert r.json()["environ"]["REMOTE_ADDR"] == "127.0.0.2", "X-Forwarded-For alone"


# --- bodies -----------------------------------------------------------------------------


def _pattern(n):
    block = hashlib.sha256(b"upload").digest() * 2048  # 64 KB
    return (block * (n // len(block) + 1))[:n]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upload_10mb_streams(stack, framing):
    """A 10 MB request body (Content-Length or chunked) reaches the app
    whole (same length and sha256), while the app waits 1 s before reading:
    the proxy streams with backpressure, so its memory grows by far less
    than the body."""
    body = _pattern(TEN_MB)
    proxy = stack.raw_proxy
    with RawConnection(proxy.port, timeout=20) as c, RssSampler(proxy.pid) as rss:
        if framing == "chunked":
            c.send(
                build_request(
                    "POST", "/upload?delay=1", [("Transfer-Encoding", "chunked")], host="proxy.test"
                )
            )
            for i in range(0, len(body), 65536):
                c.send(chunked(body[i : i + 65536])[:-5])  # one chunk, without the terminator
            c.send(b"0\r\n\r\n")
        else:
            c.send(build_request("POST", "/upload?delay=1", body=body, host="proxy.test"))
        r = c.read_response()
    assert r.status == 200, r
    data = r.json()
    assert data["bytes"] == TEN_MB
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    assert rss.growth_mb < 6, f"proxy RSS grew {rss.growth_mb:.1f} MB for a 10 MB upload"


def test_download_10mb_streams(stack):
    """A 10 MB response body arrives whole (length and sha256) while the
    client waits 1 s before reading: the proxy passes backpressure on to the
    app instead of buffering the body."""
    proxy = stack.raw_proxy
    with RawConnection(proxy.port, timeout=20) as c, RssSampler(proxy.pid) as rss:
        c.send(build_request("GET", f"/download?n={TEN_MB}", host="proxy.test"))
        time.sleep(1.0)
        r = c.read_response()
    assert r.status == 200, r
    assert len(r.body) == TEN_MB
    assert hashlib.sha256(r.body).hexdigest() == download_bytes(TEN_MB)
    assert rss.growth_mb < 6, f"proxy RSS grew {rss.growth_mb:.1f} MB for a 10 MB download"


def test_response_streams_before_app_finishes(stack):
    """Response bytes are passed on as the app yields them: the first piece
    arrives before the app's 1.5 s pause is over."""
    with RawConnection(stack.raw_proxy.port, timeout=10) as c:
        t0 = time.monotonic()
        c.send(build_request("GET", "/slow-stream", host="proxy.test"))
        c.read_head()
        while b"first\n" not in c.buf:
            c._fill()
        first_at = time.monotonic() - t0
        rest = c.read_until(b"second\n")
        total = time.monotonic() - t0
    assert first_at < 1.0, (
        f"first piece only after {first_at:.2f} s: the proxy buffered the response"
    )
    assert total >= 1.3 and b"second\n" in rest


# --- connection reuse -------------------------------------------------------------------


def test_upstream_keepalive_one_client_connection(stack):
    """50 sequential requests on one client keep-alive connection go over a
    few reused upstream connections (the app sees few distinct REMOTE_PORTs),
    not one new connection per request."""
    ports = []
    with RawConnection(stack.raw_proxy.port) as c:
        for i in range(50):
            r = c.request("GET", f"/ka/{i}")
            assert r.status == 200, r
            ports.append(r.json()["environ"]["REMOTE_PORT"])
    assert len(set(ports)) <= 5, f"{len(set(ports))} upstream connections for 50 requests"


def test_upstream_keepalive_across_client_connections(stack):
    """The upstream pool is shared: 30 requests, each on its own client
    connection, still reuse a few upstream connections."""
    ports = []
    for i in range(30):
        r = raw_request(stack.raw_proxy.port, "GET", f"/ka-new/{i}")
        assert r.status == 200, r
        ports.append(r.json()["environ"]["REMOTE_PORT"])
    assert len(set(ports)) <= 5, f"{len(set(ports))} upstream connections for 30 requests"


# --- WebSocket --------------------------------------------------------------------------


@pytest.fixture
def ws_upstream():
    ws = WsEchoServer()
    yield ws
    ws.close()


def test_websocket_upgrade_passes_through(server, ws_upstream):
    """A WebSocket handshake goes through the proxy to a WebSocket upstream:
    the client gets 101 with the right Sec-WebSocket-Accept, then the two
    sockets are joined: several text messages and a large binary one come
    back echoed, and a close is answered."""
    proxy = start_proxy(server, [f"127.0.0.1:{ws_upstream.port}"])
    with RawConnection(proxy.port, timeout=10) as c:
        status, headers, accept = ws_handshake(c, "/ws/chat?room=1")
        assert status == 101, headers
        assert headers.get("upgrade", "").lower() == "websocket"
        assert headers.get("sec-websocket-accept") == accept
        messages = [b"hello", "caf\u00e9 \u2603".encode("utf-8"), b"x" * 300]
        for m in messages:
            ws_send(c, m)
            assert ws_recv(c) == (0x1, m)
        big = os.urandom(70000)
        ws_send(c, big, opcode=0x2)
        assert ws_recv(c) == (0x2, big)
        ws_send(c, b"\x03\xe8", opcode=0x8)
        assert ws_recv(c)[0] == 0x8
    seen = ws_upstream.handshakes[0]
    assert seen["request_line"] == "GET /ws/chat?room=1 HTTP/1.1"
    assert seen["x-forwarded-for"] == "127.0.0.1"


def test_a_quiet_websocket_outlives_the_keep_alive_wait(server, ws_upstream):
    """--keep-alive 1: the wait between requests does not apply to an upgraded connection;
    a WebSocket left quiet for longer still echoes."""
    proxy = start_proxy(server, [f"127.0.0.1:{ws_upstream.port}"], "--keep-alive", "1")
    with RawConnection(proxy.port, timeout=10) as c:
        assert ws_handshake(c, "/ws")[0] == 101
        time.sleep(2.5)
        ws_send(c, b"still here")
        assert ws_recv(c) == (0x1, b"still here")


# --- upstream failures ------------------------------------------------------------------


def test_waits_for_restarting_upstream(server):
    """With --upstream-wait 10, a request made while the only app server is
    down waits; when the app server comes back on the same port ~1 s later,
    the request is answered 200."""
    app = start_app(server, 0, tag="first")
    port = app.port
    proxy = start_proxy(server, [f"127.0.0.1:{port}"], "--upstream-wait", "10")
    assert raw_request(proxy.port, "GET", "/warm").status == 200
    kill_now(app)

    result = {}

    def client():
        t0 = time.monotonic()
        try:
            result["response"] = raw_request(proxy.port, "GET", "/after-restart", timeout=15)
        except Exception as e:  # reported below
            result["error"] = repr(e)
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=client, daemon=True)
    t.start()
    time.sleep(1.0)
    assert t.is_alive(), f"request ended while the upstream was down: {result}"
    start_app(server, port, tag="second")
    t.join(timeout=15)
    assert not t.is_alive(), "request still waiting 15 s after the upstream came back"
    assert "error" not in result, result
    r = result["response"]
    assert r.status == 200, r
    assert r.json()["tag"] == "second"
    assert result["elapsed"] >= 0.9


def test_no_upstream_gives_503_with_retry_after(server):
    """No app server at all and --upstream-wait 1: once the wait is over, 503
    with Retry-After and a short plain-text body (the app is away, not
    broken), not a hang."""
    proxy = start_proxy(server, [f"127.0.0.1:{free_port()}"], "--upstream-wait", "1")
    r = raw_request(proxy.port, "GET", "/nothing-there", timeout=10)
    assert r.status == 503, r
    assert r.header("Retry-After") == "1"
    assert (r.header("Content-Type") or "").startswith("text/plain")
    assert r.body == b"503 Service Unavailable\n"


def test_routes_send_a_prefix_to_its_own_upstream(server):
    """--route /side=B: /side and everything under it goes to B, byte for
    byte; /sidecar and the rest go to the default upstream."""
    a = start_app(server, 0, tag="a")
    b = start_app(server, 0, tag="b")
    proxy = start_proxy(server, [upstream_of(a)], "--route", f"/side={upstream_of(b)}")
    for target, tag in (
        ("/side", "b"),
        ("/side/", "b"),
        ("/side/deeper/x?q=1", "b"),
        ("/sidecar", "a"),
        ("/", "a"),
        ("/other/side", "a"),
    ):
        r = raw_request(proxy.port, "GET", target)
        assert r.status == 200, (target, r)
        body = r.json()
        assert body["tag"] == tag, target
        env = body["environ"]
        sent = env["PATH_INFO"] + ("?" + env["QUERY_STRING"] if env["QUERY_STRING"] else "")
        assert sent == target


def test_an_app_server_routes_a_prefix_elsewhere(server):
    """The app server itself takes --route: /side is forwarded, the rest is
    the app's."""
    b = start_app(server, 0, tag="b")
    a = start_app(server, 0, "--route", f"/side={upstream_of(b)}", tag="a")
    assert raw_request(a.port, "GET", "/side/x").json()["tag"] == "b"
    assert raw_request(a.port, "GET", "/x").json()["tag"] == "a"


def test_a_route_whose_upstream_is_away_gives_503(server):
    a = start_app(server, 0, tag="a")
    proxy = start_proxy(
        server,
        [upstream_of(a)],
        "--route",
        f"/gone=127.0.0.1:{free_port()}",
        "--upstream-wait",
        "0.5",
    )
    assert raw_request(proxy.port, "GET", "/gone/x", timeout=10).status == 503
    assert raw_request(proxy.port, "GET", "/here").status == 200


def test_forwarding_headers_from_an_untrusted_peer_are_dropped(server, stack):
    """A proxy that trusts nobody passes on none of the client's own
    X-Forwarded-For / Forwarded / X-Real-IP: the upstream hears of the peer
    alone, so even an app reading the leftmost entry cannot be lied to."""
    proxy = start_proxy(server, [upstream_of(stack.raw_app)], "--trusted-proxies", "")
    env = get_env(
        proxy,
        "/untrusted",
        [
            ("X-Forwarded-For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
        ],
    )
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert forwarded_elements(env["HTTP_FORWARDED"]) == [
        {"for": "127.0.0.1", "proto": "http", "host": f"127.0.0.1:{proxy.port}"}
    ]
    assert "HTTP_X_REAL_IP" not in env


def test_slow_upstream_gives_504(server, stack):
    """An upstream that takes 3 s to answer, behind --response-timeout 1:
    504 after about a second."""
    proxy = start_proxy(server, [upstream_of(stack.raw_app)], "--response-timeout", "1")
    t0 = time.monotonic()
    r = raw_request(proxy.port, "GET", "/sleep?s=3", timeout=10)
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.8 <= elapsed <= 2.5, f"504 after {elapsed:.2f} s"


def test_round_robin_and_passive_health(server):
    """Two upstreams share the requests; after one is killed every request
    still gets 200 from the other."""
    a = start_app(server, 0, tag="a")
    b = start_app(server, 0, tag="b")
    proxy = start_proxy(server, [upstream_of(a), upstream_of(b)], "--upstream-wait", "5")
    tags = []
    for i in range(20):
        r = raw_request(proxy.port, "GET", f"/rr/{i}")
        assert r.status == 200, r
        tags.append(r.json()["tag"])
    assert tags.count("a") >= 5 and tags.count("b") >= 5, f"uneven spread: {tags}"

    kill_now(b)
    statuses, tags = [], []
    t0 = time.monotonic()
    for i in range(20):
        r = raw_request(proxy.port, "GET", f"/after-kill/{i}", timeout=10)
        statuses.append(r.status)
        if r.status == 200:
            tags.append(r.json()["tag"])
    assert statuses == [200] * 20, statuses
    assert set(tags) == {"a"}
    assert time.monotonic() - t0 < 5, "the dead upstream should be skipped, not waited for"


def test_sent_body_is_not_replayed(server, tmp_path):
    """A request whose body already went upstream is never sent again: the
    app records the body, then its process dies mid-request; the client gets
    502 and the body was recorded exactly once (the second upstream, alive,
    never saw it)."""
    record = tmp_path / "bodies.txt"
    env = {"PROXY_TEST_RECORD": str(record)}
    a = start_app(server, 0, tag="a", env=env)
    b = start_app(server, 0, tag="b", env=env)
    proxy = start_proxy(server, [upstream_of(a), upstream_of(b)], "--upstream-wait", "5")
    r = raw_request(
        proxy.port,
        "POST",
        "/record-crash",
        [("Content-Type", "text/plain")],
        b"payload-once",
        timeout=15,
    )
    assert r.status == 502, r
    time.sleep(0.5)  # a replay, if any, would be recorded by now
    lines = record.read_text(encoding="latin-1").splitlines()
    assert len(lines) == 1, f"body recorded {len(lines)} times: {lines}"
    assert lines[0].endswith(" payload-once")


# --- TLS --------------------------------------------------------------------------------


def test_tls_front(server, stack, tmp_path):
    """With --certfile/--keyfile the proxy serves HTTPS (its start line says
    https://); the app behind it, trusting the proxy, sees wsgi.url_scheme
    https, HTTPS=on and X-Forwarded-Proto https."""
    cert, key = make_self_signed(str(tmp_path))
    proxy = start_proxy(
        server, [upstream_of(stack.trusting_app)], "--certfile", cert, "--keyfile", key
    )
    assert proxy.url.startswith("https://127.0.0.1:"), proxy.start_line
    ctx = ssl.create_default_context(cafile=cert)
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/secure?x=1", headers={"Host": "localhost"})
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 200, body[:300]
    env = json.loads(body)["environ"]
    assert env["wsgi.url_scheme"] == "https"
    assert env.get("HTTPS") == "on"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    assert forwarded_elements(env["HTTP_FORWARDED"])[-1].get("proto") == "https", env[
        "HTTP_FORWARDED"
    ]
    assert env["RAW_URI"] == "/secure?x=1"


# --- restarts under load ----------------------------------------------------------------


def test_kill_and_restart_under_load(server):
    """4 clients make sequential keep-alive requests for ~8 s through the
    proxy while the only app server is SIGKILLed and started again on the
    same port ~1 s later, twice: every request gets 200."""
    app = start_app(server, 0, "--threads", "8", tag="gen0")
    port = app.port
    proxy = start_proxy(server, [f"127.0.0.1:{port}"], "--upstream-wait", "10")

    stop = threading.Event()
    lock = threading.Lock()
    ok = [0]
    failures = []

    def client(n):
        conn = None
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if conn is None:
                    conn = RawConnection(proxy.port, timeout=15)
                r = conn.request("GET", f"/load/{n}/{i}")
                if r.status == 200:
                    with lock:
                        ok[0] += 1
                else:
                    with lock:
                        failures.append(f"client {n} request {i}: {r.status} {r.body[:80]!r}")
                if r.header("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, AssertionError, ValueError) as e:
                with lock:
                    failures.append(f"client {n} request {i}: {e!r}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for gen in (1, 2):
            time.sleep(1.5)
            kill_now(app)
            time.sleep(1.0)
            app = start_app(server, port, "--threads", "8", tag=f"gen{gen}")
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a client thread is stuck"
    assert not failures, f"{len(failures)} failed of {ok[0] + len(failures)}: {failures[:10]}"
    assert ok[0] >= 100, f"only {ok[0]} requests made: the load was not running"


# --- static mounts on the proxy ---------------------------------------------------------


def test_proxy_serves_static_mount(server, tmp_path):
    """--static /static=DIR on the proxy: files under /static are served by
    the proxy itself (the app never sees them); other paths still go to the
    app."""
    root = tmp_path / "static"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello from the proxy\n")
    record = tmp_path / "record.txt"
    app = server(RECORDER, env={"BARTIZAN_TEST_RECORD": str(record)})
    proxy = start_proxy(server, [upstream_of(app)], "--static", f"/static={root}")
    r = raw_request(proxy.port, "GET", "/static/hello.txt")
    assert r.status == 200, r
    assert r.body == b"hello from the proxy\n"
    assert not r.has_header("X-From-App")
    r = raw_request(proxy.port, "GET", "/dynamic")
    assert r.status == 200 and r.body == b"app saw /dynamic"
    assert record.read_text().splitlines() == ["GET /dynamic"]


def test_proxy_static_without_upstream(server, tmp_path):
    """Static files on the proxy are served even when no upstream is up
    (quickly, with no wait for one)."""
    root = tmp_path / "static"
    root.mkdir()
    (root / "a.css").write_bytes(b"body{}\n")
    proxy = start_proxy(
        server, [f"127.0.0.1:{free_port()}"], "--upstream-wait", "5", "--static", f"/static={root}"
    )
    t0 = time.monotonic()
    r = raw_request(proxy.port, "GET", "/static/a.css")
    assert r.status == 200 and r.body == b"body{}\n", r
    assert time.monotonic() - t0 < 1.0
