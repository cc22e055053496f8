"""HTTP/2: over TLS by ALPN, and in the clear with prior knowledge (h2c), beside HTTP/1.1
on the same port. Requests go through the same rules as over HTTP/1.1, and the app sees
the environ Django expects of an HTTP/2 request."""

import hashlib
import json
import socket
import subprocess

import hpack
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame, SettingsFrame

from tests.support import raw_request
from tests.support.apps import ECHO
from tests.support.h2client import H2Client
from tests.support.proxy import make_self_signed, start_proxy, upstream_of

RESPONSES = "tests.apps.responses:app"
INPUTS = "tests.apps.inputs:app"
PROTOCOL_ERROR = 1
# Frame types (RFC 9113 6).
HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE = 0x1, 0x3, 0x4, 0x7, 0x8


def curl(*args):
    """curl's body and, last, the HTTP version it spoke."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_version}", *args],
        capture_output=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr.decode()
    body, _, version = out.stdout.rpartition(b"\n")
    return body, version.decode()


@pytest.fixture
def tls_files(tmp_path):
    return make_self_signed(str(tmp_path))


def test_h2c_with_prior_knowledge_and_http1_on_one_port(server):
    srv = server(ECHO)
    body, version = curl("--http2-prior-knowledge", f"{srv.url}/who?x=1")
    assert version == "2"
    env = json.loads(body)["environ"]
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert env["PATH_INFO"] == "/who" and env["QUERY_STRING"] == "x=1"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(srv.port)
    body, version = curl("--http1.1", f"{srv.url}/who")
    assert version == "1.1"
    assert json.loads(body)["environ"]["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_tls_offers_h2_and_http11(server, tls_files):
    cert, key = tls_files
    srv = server(ECHO, "--certfile", cert, "--keyfile", key)
    assert srv.url.startswith("https://")
    url = f"https://localhost:{srv.port}/secure"
    resolve = f"localhost:{srv.port}:127.0.0.1"
    for flag, want in (("--http2", "2"), ("--http1.1", "1.1")):
        body, version = curl(flag, "--cacert", cert, "--resolve", resolve, url)
        assert version == want
        env = json.loads(body)["environ"]
        assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    with H2Client(srv.port, ca=cert) as c:
        stream = c.get("/over-tls")
        assert stream.status == 200
        assert json.loads(stream.body)["environ"]["SERVER_PROTOCOL"] == "HTTP/2"


def test_many_streams_on_one_connection(server):
    srv = server(ECHO, "--threads", "4")
    with H2Client(srv.port) as c:
        sids = [c.request(f"/n/{i}") for i in range(60)]
        streams = c.wait(*sids)
    assert [s.status for s in streams] == [200] * 60
    paths = [json.loads(s.body)["environ"]["PATH_INFO"] for s in streams]
    assert paths == [f"/n/{i}" for i in range(60)]


def test_a_request_body_over_h2(server):
    srv = server(INPUTS)
    body = bytes(range(256)) * 4000  # 1 MB: more than the initial windows
    with H2Client(srv.port) as c:
        stream = c.get("/hash", method="POST", body=body, headers=[("content-type", "x/y")])
    assert stream.status == 200
    got = json.loads(stream.body)
    assert got["bytes"] == len(body)
    assert got["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_stream_reset_mid_response_leaves_the_connection_serving(server):
    srv = server(RESPONSES)
    with H2Client(srv.port) as c:
        big = c.request("/big?size=50000000")
        while len(c.streams[big].body) == 0:
            assert c.read_some()
        c.reset(big)
        after = c.get("/big?size=1000&cl=1")
        assert after.status == 200 and len(after.body) == 1000
    assert raw_request(srv.port, "GET", "/big?size=10&cl=1").status == 200


def test_connection_specific_fields_make_a_request_malformed(server):
    """RFC 9113 8.2.2: Connection, Keep-Alive, Transfer-Encoding, Upgrade and a TE other than
    "trailers" make a request malformed: its stream is reset, the connection goes on."""
    srv = server(ECHO)
    with H2Client(srv.port) as c:
        for field in (
            ("connection", "keep-alive"),
            ("keep-alive", "5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
        ):
            stream = c.get("/", headers=[field])
            assert stream.status is None and stream.reset == PROTOCOL_ERROR, field
        assert c.get("/", headers=[("te", "trailers")]).status == 200


def test_host_must_name_the_authority(server):
    srv = server(ECHO)
    with H2Client(srv.port) as c:
        assert c.get("/", headers=[("host", "elsewhere.example")]).status == 400
        same = c.get("/", headers=[("host", f"127.0.0.1:{srv.port}")])
        assert same.status == 200


def test_content_length_must_match_the_data(server):
    srv = server(INPUTS)
    with H2Client(srv.port) as c:
        short = c.get("/hash", method="POST", body=b"12345", headers=[("content-length", "10")])
        assert short.status is None and short.reset == PROTOCOL_ERROR
        long = c.get("/hash", method="POST", body=b"1234567890", headers=[("content-length", "3")])
        assert long.status is None and long.reset == PROTOCOL_ERROR
        exact = c.get("/hash", method="POST", body=b"123", headers=[("content-length", "3")])
        assert exact.status == 200 and json.loads(exact.body)["bytes"] == 3


def test_rapid_resets_end_the_connection_not_the_server(server):
    """CVE-2023-44487: a client that opens streams and resets them at once is cut off after a
    bounded number; others are served throughout."""
    srv = server(RESPONSES)
    with H2Client(srv.port) as c:
        ended = False
        try:
            for _ in range(500):
                sid = c.request("/big?size=100000")
                c.reset(sid)
                if c.goaway is not None:
                    break
            while c.goaway is None and c.read_some():
                pass
        except OSError:  # the server closed it while we were still sending
            ended = True
        ended = ended or c.goaway is not None or not c.read_some()
    # Cut off: told so with GOAWAY, or closed.
    assert ended
    with H2Client(srv.port) as other:
        assert other.get("/big?size=10&cl=1").status == 200


def test_a_header_block_that_never_ends_is_cut_off(server):
    """CVE-2024-27316: a HEADERS frame followed by CONTINUATION frames without end, each
    adding fields, is cut off (at the header list limit, or at the HTTP/2 layer's own cap on
    a block's frames, whichever comes first); the server neither buffers it forever nor
    stops serving others."""
    srv = server(ECHO, "--max-head", "16384")
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
    encoder = hpack.Encoder()
    pseudo = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
    sock.sendall(HeadersFrame(1, data=encoder.encode(pseudo)).serialize())
    # 1 KiB of fields per frame, never indexed, so each adds to the list; 4 MiB in all.
    field = encoder.encode([("x-pad", "p" * 1000)], huffman=False)
    cut_off = False
    try:
        for _ in range(4096):
            sock.sendall(ContinuationFrame(1, data=field).serialize())
    except (BrokenPipeError, ConnectionResetError):  # closed while we were still sending
        cut_off = True
    # The server acts before the block ends: a GOAWAY, a reset or an answer on the stream,
    # or the close. A server buffering it in silence leaves recv to time out, and fail.
    told = b""
    with sock:
        while not cut_off and not {GOAWAY, RST_STREAM, HEADERS} & frame_types(told):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            cut_off = not chunk
            told += chunk
    with H2Client(srv.port) as other:
        assert other.get("/").status == 200


def frame_types(data: bytes) -> set[int]:
    """The types of the whole frames in `data`."""
    kinds, at = set(), 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        kinds.add(data[at + 3])
        at += 9 + length
    return kinds


def test_the_stream_limit_is_told_to_the_client(server):
    srv = server(RESPONSES, "--http2-max-streams", "2", "--threads", "4")
    with H2Client(srv.port) as c:
        assert c.get("/big?size=10&cl=1").status == 200
        assert c.conn.remote_settings.max_concurrent_streams == 2
        sids = [c.request("/big?size=10&cl=1") for _ in range(2)]
        assert [s.status for s in c.wait(*sids)] == [200, 200]


def test_static_files_over_h2(server, tmp_path):
    (tmp_path / "site.css").write_bytes(b"body{}" * 1000)
    srv = server(ECHO, "--static", f"/static={tmp_path}")
    with H2Client(srv.port) as c:
        stream = c.get("/static/site.css")
        assert stream.status == 200
        assert bytes(stream.body) == b"body{}" * 1000
        assert stream.headers["content-type"].startswith("text/css")
        assert c.get("/static/missing.css").status == 404


def test_the_proxy_front_speaks_h2_to_clients_and_http11_upstream(server, tls_files):
    cert, key = tls_files
    app = server(ECHO)
    proxy = start_proxy(server, [upstream_of(app)], "--certfile", cert, "--keyfile", key)
    cookies = [("cookie", "a=1"), ("cookie", "b=2")]
    with H2Client(proxy.port, ca=cert) as c:
        streams = c.wait(*[c.request(f"/via/{i}", headers=cookies) for i in range(20)])
        posted = c.get("/post", method="POST", body=b"x" * 200_000)
    assert [s.status for s in streams] == [200] * 20
    env = json.loads(streams[0].body)["environ"]
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == f"127.0.0.1:{proxy.port}"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    assert json.loads(posted.body)["body_len"] == 200_000
    # h2c with prior knowledge on a plain proxy front too.
    plain = start_proxy(server, [upstream_of(app)])
    body, version = curl("--http2-prior-knowledge", f"{plain.url}/plain")
    assert version == "2"
    assert json.loads(body)["environ"]["PATH_INFO"] == "/plain"
