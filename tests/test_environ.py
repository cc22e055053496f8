"""The WSGI environ the server builds for each request (PEP 3333, "environ
Variables"; CGI/1.1, RFC 3875 section 4.1).

Requests are written as raw bytes so the exact request line and headers are
under the test's control; the echo app answers with the environ as JSON.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from tests.apps.echo import FIXED_BODY
from tests.support import RawConnection, build_request, chunked, raw_request
from tests.support.apps import ECHO


class _Absent:
    def __repr__(self):
        return "<absent>"


ABSENT = _Absent()


class _ListenPort:
    def __repr__(self):
        return "<listening port>"


LISTEN_PORT = _ListenPort()


class OneOf:
    def __init__(self, *options):
        self.options = options

    def __repr__(self):
        return f"OneOf{self.options!r}"


@dataclass
class Case:
    id: str
    method: str = "GET"
    target: str = "/"
    headers: Sequence = ()
    body: bytes = b""
    version: str = "HTTP/1.1"
    expect: dict = field(default_factory=dict)
    rule: str = ""


# Each case: a request, the environ entries it must produce, and the rule.
CASES = [
    Case(
        "simple-get",
        expect={
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1",
        },
        rule="PEP 3333: SCRIPT_NAME is empty for an app at the server root; PATH_INFO is the rest of the path",
    ),
    Case(
        "query-string-raw",
        target="/p?a=1&b=%20x+y&c=caf%C3%A9",
        expect={"PATH_INFO": "/p", "QUERY_STRING": "a=1&b=%20x+y&c=caf%C3%A9"},
        rule="CGI 4.1.7: QUERY_STRING is the URL-encoded query, passed as is (not decoded)",
    ),
    Case(
        "empty-query",
        target="/x?",
        expect={"PATH_INFO": "/x", "QUERY_STRING": ""},
        rule="PEP 3333: QUERY_STRING is the part after '?', here empty",
    ),
    Case(
        "percent-space",
        target="/a%20b",
        expect={"PATH_INFO": "/a b"},
        rule="CGI 4.1.5: PATH_INFO is URL-decoded",
    ),
    Case(
        "percent-utf8-is-latin1-decoded",
        target="/caf%C3%A9",
        expect={"PATH_INFO": "/caf\u00c3\u00a9"},
        rule="PEP 3333 'Unicode Issues': native strings hold the raw bytes decoded as ISO-8859-1",
    ),
    Case(
        "percent-non-utf8-bytes",
        target="/%FF%FEx",
        expect={"PATH_INFO": "/\u00ff\u00fex"},
        rule="PEP 3333 'Unicode Issues': any byte decodes (latin-1), even if the path is not UTF-8",
    ),
    Case(
        "percent-2F-decoded",
        target="/a%2Fb",
        expect={"PATH_INFO": "/a/b"},
        rule="CGI 4.1.5: PATH_INFO is decoded, %2F included (WSGI has no raw path)",
    ),
    Case(
        "decoded-exactly-once",
        target="/100%25/x%252F",
        expect={"PATH_INFO": "/100%/x%2F"},
        rule="percent-decoding is applied once: %25 -> '%', %252F -> '%2F'",
    ),
    Case(
        "slashes-preserved",
        target="//a//b/",
        expect={"PATH_INFO": "//a//b/"},
        rule="the server does not rewrite the path (empty segments kept)",
    ),
    Case(
        "absolute-form-target",
        target="http://example.com/abs/p?x=1",
        headers=[("Host", "example.com")],
        expect={"PATH_INFO": "/abs/p", "QUERY_STRING": "x=1"},
        rule="RFC 9112 3.2.2: a server MUST accept the absolute-form request target",
    ),
    Case(
        "method-post",
        method="POST",
        body=b"x",
        expect={"REQUEST_METHOD": "POST"},
        rule="CGI 4.1.12: REQUEST_METHOD is the method",
    ),
    Case(
        "method-put", method="PUT", body=b"x", expect={"REQUEST_METHOD": "PUT"}, rule="CGI 4.1.12"
    ),
    Case("method-delete", method="DELETE", expect={"REQUEST_METHOD": "DELETE"}, rule="CGI 4.1.12"),
    Case(
        "method-patch",
        method="PATCH",
        body=b"x",
        expect={"REQUEST_METHOD": "PATCH"},
        rule="CGI 4.1.12",
    ),
    Case(
        "method-options", method="OPTIONS", expect={"REQUEST_METHOD": "OPTIONS"}, rule="CGI 4.1.12"
    ),
    Case(
        "method-extension",
        method="PROPFIND",
        expect={"REQUEST_METHOD": "PROPFIND"},
        rule="CGI 4.1.12: methods are not limited to a fixed list",
    ),
    Case(
        "header-names-mapped",
        headers=[("X-Custom-Header", "v1"), ("x-lower", "v2")],
        expect={"HTTP_X_CUSTOM_HEADER": "v1", "HTTP_X_LOWER": "v2"},
        rule="CGI 4.1.18: HTTP_ + upper-cased name with '-' replaced by '_'",
    ),
    Case(
        "header-ows-trimmed",
        headers=[("X-Padded", "   padded value  ")],
        expect={"HTTP_X_PADDED": "padded value"},
        rule="RFC 9112 5.1: leading/trailing whitespace is not part of the field value",
    ),
    Case(
        "repeated-header-joined",
        headers=[("X-Multi", "a"), ("X-Multi", "b")],
        expect={"HTTP_X_MULTI": "a,b"},
        rule="CGI 4.1.18 / RFC 9110 5.3: repeated fields are combined with ','",
    ),
    Case(
        "cookies-joined",
        headers=[("Cookie", "a=1"), ("Cookie", "b=2")],
        expect={"HTTP_COOKIE": "a=1; b=2"},
        rule="RFC 6265 5.4 / RFC 9113 8.2.3: several Cookie fields combine with '; ', not ','",
    ),
    Case(
        "underscore-header-dropped",
        headers=[("X_Forwarded_For", "evil")],
        expect={"HTTP_X_FORWARDED_FOR": ABSENT},
        rule="a header whose name has '_' would collide with a '-' name after CGI mapping: it is dropped",
    ),
    Case(
        "underscore-header-not-merged",
        headers=[("X-Forwarded-For", "good"), ("X_Forwarded_For", "evil")],
        expect={"HTTP_X_FORWARDED_FOR": "good"},
        rule="an '_' header must not be merged into (spoof) the '-' header of the same CGI name",
    ),
    Case(
        "content-headers",
        method="POST",
        headers=[("Content-Type", "text/plain; charset=utf-8")],
        body=b"hello",
        expect={
            "CONTENT_TYPE": "text/plain; charset=utf-8",
            "CONTENT_LENGTH": "5",
            "HTTP_CONTENT_TYPE": ABSENT,
            "HTTP_CONTENT_LENGTH": ABSENT,
            "body": "hello",
        },
        rule="CGI 4.1.2/4.1.3: Content-Type/Length go to CONTENT_TYPE/CONTENT_LENGTH, never HTTP_*",
    ),
    Case(
        "no-body",
        expect={
            "CONTENT_TYPE": OneOf(ABSENT, ""),
            "CONTENT_LENGTH": OneOf(ABSENT, "", "0"),
            "body_len": 0,
        },
        rule="PEP 3333: CONTENT_TYPE/CONTENT_LENGTH may be empty or absent when there is no body",
    ),
    Case(
        "http-1.0",
        version="HTTP/1.0",
        expect={
            "SERVER_PROTOCOL": "HTTP/1.0",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": LISTEN_PORT,
            "HTTP_HOST": ABSENT,
        },
        rule="CGI 4.1.16: SERVER_PROTOCOL is the request's version; without Host, name/port come from the listening address",
    ),
    Case(
        "host-with-port",
        headers=[("Host", "example.com:8080")],
        expect={
            "SERVER_NAME": "example.com",
            "SERVER_PORT": "8080",
            "HTTP_HOST": "example.com:8080",
        },
        rule="PEP 3333 URL reconstruction: SERVER_NAME/PORT agree with the Host header",
    ),
    Case(
        "host-without-port",
        headers=[("Host", "example.com")],
        expect={
            "SERVER_NAME": "example.com",
            "SERVER_PORT": OneOf("80", LISTEN_PORT),
            "HTTP_HOST": "example.com",
        },
        rule="SERVER_NAME from Host; with no port in Host, the scheme default or the real port",
    ),
    Case(
        "chunked-body",
        method="POST",
        headers=[("Transfer-Encoding", "chunked")],
        body=chunked(b"hello ", b"chunked ", b"world"),
        expect={
            "body": "hello chunked world",
            "CONTENT_LENGTH": OneOf(ABSENT, "", "19"),
            "HTTP_TRANSFER_ENCODING": OneOf(ABSENT, "chunked"),
        },
        rule="RFC 9112 7.1: a chunked body is decoded; the app reads the payload only",
    ),
    Case(
        "sized-body",
        method="PUT",
        body=b"0123456789" * 1000,
        expect={"CONTENT_LENGTH": "10000", "body_len": 10000},
        rule="RFC 9112 6.2: Content-Length delimits the body; the app reads all of it",
    ),
    Case(
        "binary-body",
        method="POST",
        headers=[("Content-Type", "application/octet-stream")],
        body=bytes(range(256)),
        expect={"body": bytes(range(256)).decode("latin-1"), "body_len": 256},
        rule="PEP 3333: wsgi.input yields the body bytes unchanged",
    ),
]


def _lookup(data, key):
    if key in ("body", "body_len", "body_sha256"):
        return data[key]
    return data["environ"].get(key, ABSENT)


def _matches(actual, expected, port):
    if expected is LISTEN_PORT:
        expected = str(port)
    if isinstance(expected, OneOf):
        return any(_matches(actual, opt, port) for opt in expected.options)
    if expected is ABSENT:
        return actual is ABSENT
    return actual == expected


@pytest.fixture(scope="module")
def echo(module_server):
    return module_server(ECHO, "--threads", "4")


def echo_request(srv, method="GET", target="/", headers=(), body=b"", version="HTTP/1.1"):
    resp = raw_request(srv.port, method, target, headers, body, version)
    assert resp.status == 200, resp
    return resp.json()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_environ_case(echo, case):
    data = echo_request(echo, case.method, case.target, case.headers, case.body, case.version)
    for key, expected in case.expect.items():
        actual = _lookup(data, key)
        assert _matches(actual, expected, echo.port), (
            f"{case.rule}\n{case.method} {case.target}: {key} = {actual!r}, expected {expected!r}"
        )


# PEP 3333 lists these as required; CONTENT_TYPE/CONTENT_LENGTH may be absent.
REQUIRED_CGI = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
]


def test_required_keys_present_and_native_strings(echo):
    """PEP 3333: the CGI variables are present and are native str; SERVER_NAME
    and SERVER_PORT are never empty; the environ is a builtin dict."""
    data = echo_request(echo, "GET", "/some/path?x=1")
    env = data["environ"]
    for key in REQUIRED_CGI:
        assert key in env, f"required key {key} missing"
    assert env["SERVER_NAME"] != "" and env["SERVER_PORT"] != ""
    assert env["SERVER_PORT"].isdigit()
    bad = {k: t for k, t in data["cgi_types"].items() if t != "str"}
    assert not bad, f"CGI keys must be native str, got {bad}"
    assert data["environ_type"] == "dict", "environ must be a builtin dict (PEP 3333)"


def test_wsgi_keys(echo):
    """PEP 3333 'environ Variables': wsgi.version is the tuple (1, 0);
    url_scheme 'http'; a threaded single-process server says multithread
    True, multiprocess False, run_once False; input and errors exist with
    their stream methods."""
    data = echo_request(echo, "GET", "/")
    w = data["wsgi"]
    assert w["version_type"] == "tuple" and w["version"] == [1, 0]
    assert w["url_scheme"] == "http"
    assert w["multithread"] is True
    assert w["multiprocess"] is False
    assert w["run_once"] is False
    assert w["has_input"] and w["has_errors"]
    assert w["input_methods"] == ["__iter__", "read", "readline", "readlines"]
    assert w["errors_methods"] == ["flush", "write", "writelines"]


def test_file_wrapper_offered(echo):
    """PEP 3333 'Optional Platform-Specific File Handling': when offered,
    wsgi.file_wrapper is callable (it is used by the response tests)."""
    data = echo_request(echo, "GET", "/")
    assert data["wsgi"]["file_wrapper_callable"] is True


def test_remote_addr_and_port(echo):
    """CGI 4.1.8: REMOTE_ADDR is the client's address; REMOTE_PORT (common
    extension) is the client's source port."""
    with RawConnection(echo.port) as c:
        c.send(build_request("GET", "/", host=f"127.0.0.1:{echo.port}"))
        data = c.read_response().json()
        env = data["environ"]
        assert env.get("REMOTE_ADDR") == "127.0.0.1"
        assert env.get("REMOTE_PORT") == str(c.local_port)


def test_keepalive_requests_get_fresh_environ(echo):
    """PEP 3333: each request gets its own environ; headers of a previous
    request on the same connection must not leak into the next one."""
    with RawConnection(echo.port) as c:
        c.send(build_request("GET", "/first?a=1", [("X-Only-First", "1")], host="h"))
        first = c.read_response().json()["environ"]
        c.send(build_request("POST", "/second", body=b"abc", host="h"))
        second = c.read_response().json()["environ"]
    assert first.get("HTTP_X_ONLY_FIRST") == "1"
    assert "HTTP_X_ONLY_FIRST" not in second
    assert second["PATH_INFO"] == "/second" and second["QUERY_STRING"] == ""
    assert second["REQUEST_METHOD"] == "POST"


def _headers_without_date(resp):
    return sorted((k.lower(), v) for k, v in resp.headers if k.lower() != "date")


@pytest.mark.parametrize("path", ["/fixed", "/fixed-stream"])
def test_head_has_get_headers_but_no_body(echo, path):
    """RFC 9110 9.3.2: HEAD is GET without content: same header fields, no
    body bytes on the wire. Checked by sending a second request on the same
    connection: any stray body bytes would corrupt its status line."""
    with RawConnection(echo.port) as c:
        c.send(build_request("GET", path, host="h"))
        get = c.read_response("GET")
        c.send(build_request("HEAD", path, host="h"))
        head = c.read_response("HEAD")
        # Nothing may follow the HEAD response's header block.
        c.settimeout(0.3)
        try:
            stray = c.read_some()
        except TimeoutError:
            stray = b""
        c.settimeout(5)
        assert stray == b"", f"bytes after HEAD response headers: {stray[:100]!r}"
        c.send(build_request("GET", "/fixed", host="h"))
        after = c.read_response("GET")
    assert get.status == head.status == 200
    assert get.body and head.body == b""
    if path == "/fixed":
        assert _headers_without_date(head) == _headers_without_date(get)
    else:
        # Framing headers may differ for an unsized body; the app's must not.
        assert head.header("X-Fixed") == get.header("X-Fixed") == "yes"
        assert head.header("Content-Type") == get.header("Content-Type")
    assert after.status == 200 and after.body == FIXED_BODY


# --- --root-path -----------------------------------------------------------


@pytest.fixture(scope="module")
def rooted(module_server):
    return module_server(ECHO, "--root-path", "/prefix")


ROOT_CASES = [
    ("/prefix/x/y?q=1", {"SCRIPT_NAME": "/prefix", "PATH_INFO": "/x/y", "QUERY_STRING": "q=1"}),
    ("/prefix/", {"SCRIPT_NAME": "/prefix", "PATH_INFO": "/"}),
    ("/prefix", {"SCRIPT_NAME": "/prefix", "PATH_INFO": ""}),
    ("/prefix/a%20b", {"SCRIPT_NAME": "/prefix", "PATH_INFO": "/a b"}),
]


@pytest.mark.parametrize("target,expect", ROOT_CASES, ids=[t for t, _ in ROOT_CASES])
def test_root_path_splits_script_name(rooted, target, expect):
    """PEP 3333: SCRIPT_NAME is where the app is mounted, PATH_INFO the rest;
    SCRIPT_NAME + PATH_INFO is the request path (PATH_INFO '' at the mount
    point itself)."""
    data = echo_request(rooted, "GET", target)
    env = data["environ"]
    for k, v in expect.items():
        assert env.get(k) == v, f"{target}: {k}={env.get(k)!r}, expected {v!r}"


@pytest.mark.parametrize("target", ["/", "/other", "/prefixed", "/pre"])
def test_root_path_outside_prefix_is_404(rooted, target):
    """A request outside the mount point reaches no app: 404. '/prefixed'
    is outside '/prefix' (the prefix matches whole path segments only)."""
    with RawConnection(rooted.port) as c:
        c.send(build_request("GET", target, host="h"))
        resp = c.read_response()
    assert resp.status == 404, resp
