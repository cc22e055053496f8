"""Request shapes that smuggling attacks use when a proxy and a server read a request
differently, and heads past the limits people know from nginx and Gunicorn: each gets its
status, the connection closes after it, the app never sees it, and the server goes on serving.
The same table runs against the app server and through the proxy front."""

from __future__ import annotations

import socket

import pytest

from tests.support import RawConnection, raw_request
from tests.support.proxy import start_proxy, upstream_of
from tests.support.raw import ConnectionClosed

COUNTER_APP = """
import os

PATH = os.environ["HARDENING_CALLS"]


def app(environ, start_response):
    with open(PATH, "a") as f:
        f.write(environ["REQUEST_METHOD"] + " " + environ["PATH_INFO"] + "\\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]
"""

LONG_LINE = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
LONG_FIELD = b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 8200 + b"\r\n\r\n"
# "X-Big: " and the value: 8,191 bytes, one past the default limit of 8,190.
FIELD_LINE_8191 = b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 8184 + b"\r\n\r\n"
MANY_FIELDS = (
    b"GET /x HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(150)) + b"\r\n"
)

# (id, raw request, status, RFC rule)
HOSTILE = [
    (
        "two-hosts",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
        "RFC 9110 7.2: more than one Host field MUST get 400",
    ),
    (
        "two-content-types",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        400,
        "RFC 9110 5.3: a singleton field repeated with different values",
    ),
    (
        "asterisk-without-options",
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
        "RFC 9112 3.2.4: the asterisk form is only for OPTIONS",
    ),
    (
        "authority-form-without-connect",
        b"GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
        "RFC 9112 3.2.3: the authority form is only for CONNECT",
    ),
    (
        "connect",
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
        501,
        "RFC 9110 9.3.6: an origin server may refuse CONNECT; every request gets an answer",
    ),
    (
        "content-length-then-transfer-encoding",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 41\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
        "RFC 9112 6.1: Content-Length with Transfer-Encoding ought to be handled as an error",
    ),
    (
        "transfer-encoding-then-content-length",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 41\r\n"
        b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
        "RFC 9112 6.1: Content-Length with Transfer-Encoding, in either order",
    ),
    (
        "two-content-lengths",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "RFC 9112 6.3: differing Content-Length values are unrecoverable",
    ),
    (
        "same-content-length-twice",
        b"POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        400,
        "RFC 9110 8.6: repeated Content-Length may be refused; llhttp refuses it",
    ),
    (
        "a-transfer-coding-other-than-chunked",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        501,
        "RFC 9112 6.1: a transfer coding the server does not decode gets 501",
    ),
    (
        "chunked-twice",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        400,
        "RFC 9112 7: chunked is applied to a message once",
    ),
    (
        "bare-lf-in-the-trailer-section",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\nX-T: v\n\r\n",
        400,
        "RFC 9112 2.2: lines of the trailer section end with CRLF",
    ),
    (
        "content-length-in-trailers",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nContent-Length: 40\r\n\r\n",
        400,
        "RFC 9110 6.5.1: a trailer field must not change framing",
    ),
    (
        "transfer-encoding-in-trailers",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "RFC 9110 6.5.1: a trailer field must not change framing",
    ),
    (
        "host-in-trailers",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nHost: evil\r\n\r\n",
        400,
        "RFC 9110 6.5.1: a trailer field must not change routing",
    ),
    (
        "authorization-in-trailers",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nAuthorization: Basic YTpi\r\n\r\n",
        400,
        "RFC 9110 6.5.1: a trailer field must not change authentication",
    ),
    (
        "forbidden-trailer-with-an-unknown-expectation",
        b"POST /x HTTP/1.1\r\nHost: h\r\nExpect: something\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nHost: evil\r\n\r\n",
        400,
        "RFC 9110 6.5.1: only 100-continue waits for the app; other bodies are read ahead",
    ),
    (
        "bare-lf-inside-the-head",
        b"GET /x HTTP/1.1\r\nHost: h\r\nDummy: x\nContent-Length: 35\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
        "RFC 9112 2.2: a bare LF read as a line end lets a front that keeps it in a value "
        "read another request",
    ),
    (
        "bare-lf-ending-the-request-line",
        b"GET /x HTTP/1.1\nHost: h\r\n\r\n",
        400,
        "RFC 9112 2.2: the request line ends with CRLF",
    ),
    (
        "chunk-extension-without-a-name",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;\r\nok\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: a chunk extension has a name (a token)",
    ),
    (
        "chunk-size-with-trailing-whitespace",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: whitespace after a chunk size only before an extension",
    ),
    (
        "field-line-one-byte-past-the-limit",
        FIELD_LINE_8191,
        431,
        "nginx and Gunicorn count a field's whole line (name, colon, space, value)",
    ),
    ("long-request-line", LONG_LINE, 414, "RFC 9112 3: a request line past the limit gets 414"),
    ("long-field", LONG_FIELD, 431, "RFC 6585 5: a header field past the limit gets 431"),
    ("many-fields", MANY_FIELDS, 431, "RFC 6585 5: more fields than the limit get 431"),
]


@pytest.fixture(scope="module")
def app_server(module_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("hardening")
    (base / "counter_app.py").write_text(COUNTER_APP)
    calls = base / "calls.txt"
    calls.write_text("")
    srv = module_server(
        "counter_app:app", cwd=base, env={"HARDENING_CALLS": str(calls), "PYTHONPATH": str(base)}
    )
    srv.calls = calls
    return srv


@pytest.fixture(scope="module", params=["app-server", "proxy-front"])
def target(request, app_server, module_server):
    if request.param == "app-server":
        return app_server.port
    return start_proxy(module_server, [upstream_of(app_server)]).port


@pytest.mark.parametrize("raw,status,rule", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_request_is_refused_and_the_connection_closed(
    target, app_server, raw, status, rule
):
    before = app_server.calls.read_text()
    with RawConnection(target) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            resp = c.read_response()
        except ConnectionClosed:
            pytest.fail(f"{rule}: closed without an answer")
        assert resp.status == status, f"{rule}: got {resp.status}"
        assert b"Traceback" not in resp.body
        assert c.is_closed_by_peer(5), f"{rule}: the connection was left open"
    assert app_server.calls.read_text() == before, f"{rule}: the app was called"
    # The server goes on serving, on a new connection.
    assert raw_request(target, "GET", "/after").body == b"app"


VALID = [
    ("options-asterisk", b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"),
    ("absolute-form", b"GET http://h/abs HTTP/1.1\r\nHost: h\r\n\r\n"),
    (
        "chunked-with-extension-and-trailer",
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
    ),
    ("http10-keepalive", b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    ("fragment-in-target", b"GET /f#part HTTP/1.1\r\nHost: h\r\n\r\n"),
    (
        "chunk-size-with-leading-zeros",
        b"POST /z HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"000000000000000000003\r\nabc\r\n0\r\n\r\n",
    ),
]


@pytest.mark.parametrize("raw", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_shapes_still_reach_the_app(target, raw):
    with RawConnection(target) as c:
        c.send(raw)
        resp = c.read_response()
    assert resp.status == 200, resp
    assert resp.body == b"app"


def test_limits_are_options(server, tmp_path):
    """--limit-request-line 100: a 200-byte target gets 414; --limit-request-fields 5: six
    fields get 431."""
    (tmp_path / "counter_app.py").write_text(COUNTER_APP)
    env = {"HARDENING_CALLS": str(tmp_path / "calls.txt"), "PYTHONPATH": str(tmp_path)}
    srv = server(
        "counter_app:app",
        "--limit-request-line",
        "100",
        "--limit-request-fields",
        "5",
        cwd=tmp_path,
        env=env,
    )
    assert raw_request(srv.port, "GET", "/" + "a" * 200).status == 414
    many = [(f"X-{i}", "v") for i in range(6)]
    assert raw_request(srv.port, "GET", "/ok", many).status == 431
    assert raw_request(srv.port, "GET", "/ok").status == 200


def test_connections_past_the_limit_wait_in_the_backlog(server, tmp_path):
    """--max-connections 2: a third connection is accepted by the kernel but not served
    while two are open; it is answered (not refused) once one of them closes."""
    (tmp_path / "counter_app.py").write_text(COUNTER_APP)
    env = {"HARDENING_CALLS": str(tmp_path / "calls.txt"), "PYTHONPATH": str(tmp_path)}
    srv = server("counter_app:app", "--max-connections", "2", cwd=tmp_path, env=env)
    first, second, third = (RawConnection(srv.port) for _ in range(3))
    try:
        for c in (first, second):
            c.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
            assert c.read_response().status == 200
        third.send(b"GET /waiting HTTP/1.1\r\nHost: h\r\n\r\n")
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):
            third.read_some()
        first.close()
        third.settimeout(10)
        assert third.read_response().status == 200
    finally:
        for c in (first, second, third):
            c.close()


def test_a_forbidden_trailer_past_the_read_ahead_is_never_forwarded(module_server):
    """A chunked body longer than what is read ahead (64 KiB) reaches the upstream as it
    streams; a Host field in its trailer section then fails the forward (502) instead of
    reaching the upstream, which (a raw socket recording what it is sent) sees no trailer
    (and, as the forward is cut, no end of the body either)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = []

    def upstream():
        conn, _ = listener.accept()
        conn.settimeout(10)
        data = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        received.append(data)
        conn.close()

    t = threading.Thread(target=upstream, daemon=True)
    t.start()
    big = b"a" * 70_000
    try:
        proxy = start_proxy(module_server, [f"127.0.0.1:{listener.getsockname()[1]}"])
        with RawConnection(proxy.port) as c:
            c.send(
                b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x\r\n%s\r\n0\r\nHost: evil\r\nX-Sum: 42\r\n\r\n" % (len(big), big)
            )
            assert c.read_response().status == 502
        t.join(10)
    finally:
        listener.close()
    assert received, "the upstream was never reached"
    assert b"evil" not in received[0] and b"X-Sum" not in received[0]


def test_a_forbidden_trailer_past_the_read_ahead_fails_the_apps_read(server, tmp_path):
    """The same long body to the app: wsgi.input's read raises where the trailers arrive, so
    the app never takes the body as whole, and the connection is not reused."""
    (tmp_path / "reader_app.py").write_text(READER_APP)
    srv = server("reader_app:app", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    big = b"a" * 70_000
    with RawConnection(srv.port) as c:
        c.send(
            b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\nContent-Length: 5\r\n\r\n" % (len(big), big)
        )
        resp = c.read_response()
    assert resp.status == 200
    assert resp.body.startswith(b"OSError: ") and b"trailer field content-length" in resp.body


READER_APP = """
def app(environ, start_response):
    try:
        body = environ["wsgi.input"].read()
        out = b"read %d" % len(body)
    except OSError as e:
        out = ("OSError: %s" % e).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [out]
"""


def test_an_idle_connection_closes_after_the_keep_alive_wait(server, tmp_path):
    """--keep-alive 1: a connection left idle after an answer is closed by the server, while a
    head that has begun gets --header-timeout; with --keep-alive 0 every answer closes its
    connection."""
    (tmp_path / "counter_app.py").write_text(COUNTER_APP)
    env = {"HARDENING_CALLS": str(tmp_path / "calls.txt"), "PYTHONPATH": str(tmp_path)}
    srv = server("counter_app:app", "--keep-alive", "1", cwd=tmp_path, env=env)
    with RawConnection(srv.port) as c:
        c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().status == 200
        assert c.is_closed_by_peer(10)
    off = server("counter_app:app", "--keep-alive", "0", cwd=tmp_path, env=env)
    with RawConnection(off.port) as c:
        c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200 and resp.header("Connection") == "close"
        assert c.is_closed_by_peer(10)


def test_the_keep_alive_wait_is_not_the_head_wait(server, tmp_path):
    """--header-timeout 1 --keep-alive 30: a connection idle for longer than the head wait
    between two requests still serves the second; a head begun and left unfinished is cut."""
    import time

    (tmp_path / "counter_app.py").write_text(COUNTER_APP)
    env = {"HARDENING_CALLS": str(tmp_path / "calls.txt"), "PYTHONPATH": str(tmp_path)}
    srv = server(
        "counter_app:app", "--header-timeout", "1", "--keep-alive", "30", cwd=tmp_path, env=env
    )
    with RawConnection(srv.port) as c:
        c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().status == 200
        time.sleep(2.5)
        c.send(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().status == 200
        c.send(b"GET /c HTTP/1.1\r\nHo")
        assert c.is_closed_by_peer(10)


def test_a_slow_reader_gets_a_large_answer_whole_without_keep_alive(server, tmp_path):
    """--keep-alive 0: the answer's end may still sit in a buffer when the app is done with
    it; a client that reads 8 MiB slowly still gets every byte before the close."""
    import time

    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * (8 * 4096))
    (tmp_path / "counter_app.py").write_text(COUNTER_APP)
    env = {"HARDENING_CALLS": str(tmp_path / "calls.txt"), "PYTHONPATH": str(tmp_path)}
    srv = server(
        "counter_app:app", "--keep-alive", "0", "--static", f"/s={tmp_path}", cwd=tmp_path, env=env
    )
    with RawConnection(srv.port) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        c.send(b"GET /s/big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(1.0)
        data = c.read_to_eof(60)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert body == bytes(range(256)) * (8 * 4096)
