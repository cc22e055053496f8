"""Static and media roots served from Rust (`--static PREFIX=DIR`, Django's
STATIC_ROOT/MEDIA_ROOT, `Server(static=...)`): file bytes and headers,
conditional and range requests, precompressed siblings, caching, the
security of a private root (nothing outside it, no dotfiles, no listings),
bounded memory for large files, and that Python never sees these requests."""

import email.utils
import os
import socket
import time
import uuid
from pathlib import Path

import bartizan
import pytest
import requests

from tests.support import RssSampler, fetch_until_close, header_tokens, send_until_close
from tests.support.apps import RECORDER
from tests.support.statics import (
    BIG_SIZE,
    RANGE_TXT,
    REAL_CSS,
    SECRET,
    X_CSS,
    X_CSS_BR,
    build_tree,
)

TIMEOUT = 10
DEMO_STATIC = Path(bartizan.__file__).resolve().parent / "demo" / "static"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_tree(tmp_path_factory.mktemp("statics"))


@pytest.fixture(scope="module")
def record_file(tmp_path_factory):
    return tmp_path_factory.mktemp("record") / "calls.log"


@pytest.fixture(scope="module")
def srv(module_server, tree, record_file):
    """The recording app with /static, /static/special and /media mounted."""
    return module_server(
        RECORDER, *tree.static_args(), env={"BARTIZAN_TEST_RECORD": str(record_file)}
    )


def app_calls(record_file):
    try:
        return record_file.read_text().splitlines()
    except FileNotFoundError:
        return []


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


# --- command line --------------------------------------------------------------


BAD_SPECS = [
    ("no-equals", lambda t: "/static"),
    ("prefix-without-slash", lambda t: f"static={t.root}"),
    ("missing-dir", lambda t: f"/static={t.base / 'no-such-dir'}"),
]


@pytest.mark.parametrize("make_spec", [c[1] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_static_spec_is_a_user_error(server, tree, make_spec):
    """A malformed `--static` (no '=', a prefix not starting with '/', a
    directory that doesn't exist) ends with one line on stderr naming the
    option and exit code 2, before serving anything."""
    spec = make_spec(tree)
    rc, err = server(RECORDER, "--static", spec, wait=False).outcome()
    assert rc == 2, f"exit code {rc}; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line message, got:\n{err}"
    assert "--static" in lines[0], err


# --- plain GET: bytes and headers ------------------------------------------------


def test_get_returns_file_bytes_and_validators(srv, tree):
    """GET of a file under the mount: 200, the exact bytes, Content-Length
    equal to the size, and the validators ETag and Last-Modified (the file's
    mtime, as an HTTP date)."""
    r = fetch_until_close(srv.port, "/static/real.css")
    assert r.status == 200, r
    assert r.body == REAL_CSS
    assert r.header("Content-Length") == str(len(REAL_CSS))
    assert r.header("ETag"), r.headers
    lm = r.header("Last-Modified")
    assert lm, r.headers
    mtime = int((tree.root / "real.css").stat().st_mtime)
    assert email.utils.parsedate_to_datetime(lm).timestamp() == mtime


CONTENT_TYPES = [
    ("real.css", {"text/css; charset=utf-8"}),
    ("script.js", {"text/javascript; charset=utf-8", "application/javascript; charset=utf-8"}),
    ("page.html", {"text/html; charset=utf-8"}),
    ("notes.txt", {"text/plain; charset=utf-8"}),
    ("data.json", {"application/json; charset=utf-8"}),
    ("icon.svg", {"image/svg+xml; charset=utf-8"}),
    ("pixel.png", {"image/png"}),
]


@pytest.mark.parametrize("name,expected", CONTENT_TYPES, ids=[c[0] for c in CONTENT_TYPES])
def test_content_type_from_extension(srv, tree, name, expected):
    """Content-Type comes from the extension; text types (css, js, html,
    txt, json, svg) say `charset=utf-8`, images carry no charset. Content-Length
    is always there and matches the body."""
    r = fetch_until_close(srv.port, f"/static/{name}")
    assert r.status == 200, r
    ct = (r.header("Content-Type") or "").lower().replace(" ", "")
    assert ct in {e.replace(" ", "") for e in expected}, (
        f"Content-Type {r.header('Content-Type')!r} for {name}"
    )
    assert r.header("Content-Length") == str(len(tree.files[name]))
    assert r.body == tree.files[name]


@pytest.mark.parametrize(
    "target",
    ["/static/missing.css", "/static/sub/missing.txt", "/static/nodir/x.css", "/media/missing.png"],
)
def test_missing_file_is_404(srv, target):
    """A path under a mount that names no file answers 404 (not an error
    status of another kind, and not the app)."""
    r = fetch_until_close(srv.port, target)
    assert r.status == 404, f"GET {target} -> {r.status} {r.body[:100]!r}"


def test_symlink_inside_root_is_served(srv):
    """A symlink whose target lies inside the root is an ordinary file:
    alias.css -> real.css answers 200 with real.css's bytes."""
    r = fetch_until_close(srv.port, "/static/alias.css")
    assert r.status == 200, r
    assert r.body == REAL_CSS


def test_changed_file_is_served_fresh(srv, tree):
    """Small files are kept in memory, but a file changed on disk (same size,
    new content and mtime) is served with its new bytes and a new ETag on the
    very next request: the copy is only used while a fresh stat vouches for it."""
    path = tree.root / "changing.txt"
    path.write_bytes(b"first version\n")
    first = fetch_until_close(srv.port, "/static/changing.txt")
    assert first.status == 200 and first.body == b"first version\n", first
    again = fetch_until_close(srv.port, "/static/changing.txt")
    assert again.body == b"first version\n", again
    path.write_bytes(b"other version\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fresh = fetch_until_close(srv.port, "/static/changing.txt")
    assert fresh.status == 200 and fresh.body == b"other version\n", fresh
    assert fresh.header("etag") != first.header("etag")


def test_longest_prefix_wins_and_media_mount(srv):
    """With /static and /static/special both mounted (the shorter given
    first), /static/special/... is served from the /static/special directory;
    /media is its own root."""
    r = fetch_until_close(srv.port, "/static/special/only.txt")
    assert r.status == 200, r
    assert r.body == b"from the /static/special mount\n"
    r = fetch_until_close(srv.port, "/media/photo.png")
    assert r.status == 200, r
    assert r.header("Content-Type") == "image/png"


def test_cache_control(srv):
    """A content-hashed name (12 hex digits before the extension) is cached
    for a year and immutable; any other file for the default max-age, 3600."""
    r = fetch_until_close(srv.port, "/static/app.3f2a1b4c5d6e.css")
    assert r.status == 200, r
    assert r.header("Cache-Control") == "public, max-age=31536000, immutable"
    r = fetch_until_close(srv.port, "/static/real.css")
    assert r.status == 200, r
    assert r.header("Cache-Control") == "public, max-age=3600"
    # 11 hex digits is not a content hash.
    assert (
        fetch_until_close(srv.port, "/static/app.3f2a1b4c5d6.css").header("Cache-Control")
        == "public, max-age=3600"
    )


def test_static_max_age_option(server, tree):
    """`--static-max-age N` sets max-age for unhashed files; hashed names
    keep their year."""
    s = server(RECORDER, "--static", f"/static={tree.root}", "--static-max-age", "123")
    assert (
        fetch_until_close(s.port, "/static/real.css").header("Cache-Control")
        == "public, max-age=123"
    )
    assert (
        fetch_until_close(s.port, "/static/app.3f2a1b4c5d6e.css").header("Cache-Control")
        == "public, max-age=31536000, immutable"
    )


# --- directories -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["/static", "/static/", "/static/sub/", "/static/sub"])
def test_directory_is_forbidden_never_listed(srv, target):
    """A directory (the mount root itself or a subdirectory, with or without
    the trailing slash) answers 403 and its entries are never listed."""
    r = fetch_until_close(srv.port, target)
    assert r.status == 403, r
    for entry in (b"inside.txt", b"real.css", b".hidden", b"pixel.png"):
        assert entry not in r.body, f"listing leaked {entry!r}: {r.body[:300]!r}"


# --- methods ---------------------------------------------------------------------


def test_head_same_headers_no_body(srv):
    """HEAD answers with the headers of GET (status, length, type,
    validators, caching) and not one body byte on the wire."""
    get = fetch_until_close(srv.port, "/static/real.css")
    head = fetch_until_close(srv.port, "/static/real.css", method="HEAD")
    assert head.status == 200, head
    assert head.body == b"", f"HEAD sent body bytes: {head.body[:100]!r}"
    for name in ("Content-Length", "Content-Type", "ETag", "Last-Modified", "Cache-Control"):
        assert head.header(name) == get.header(name), name


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_not_allowed(srv, method, record_file):
    """Any method but GET and HEAD on a static path: 405 with an Allow
    header listing GET and HEAD; the file is not sent and the app is not
    called instead."""
    before = len(app_calls(record_file))
    r = fetch_until_close(
        srv.port, "/static/real.css", method=method, headers=[("Content-Length", "0")]
    )
    assert r.status == 405, r
    assert {"get", "head"} <= header_tokens(r.header("Allow")), r.headers
    assert REAL_CSS not in r.body
    assert app_calls(record_file)[before:] == []


# --- conditional requests --------------------------------------------------------


def current_etag(srv, path="/static/real.css"):
    r = fetch_until_close(srv.port, path)
    assert r.status == 200 and r.header("ETag"), r
    return r.header("ETag"), r.header("Last-Modified")


def strip_weak(tag):
    return tag[2:] if tag.startswith("W/") else tag


INM_MATCHING = [
    ("exact", lambda tag: tag),
    ("star", lambda tag: "*"),
    ("in-list", lambda tag: f'"nope-1", {tag}, "nope-2"'),
    ("weak", lambda tag: "W/" + strip_weak(tag)),
]


@pytest.mark.parametrize("make", [c[1] for c in INM_MATCHING], ids=[c[0] for c in INM_MATCHING])
def test_if_none_match_gives_304(srv, make):
    """If-None-Match that matches the current ETag (the tag itself, `*`, a
    list containing it, its weak `W/` form) answers 304 with the ETag and
    no body."""
    tag, _ = current_etag(srv)
    r = fetch_until_close(srv.port, "/static/real.css", headers=[("If-None-Match", make(tag))])
    assert r.status == 304, r
    assert r.header("ETag") == tag
    assert r.body == b"", f"304 carried a body: {r.body[:100]!r}"


def test_if_none_match_other_tag_gives_200(srv):
    """A non-matching If-None-Match gets the full 200; it takes precedence
    over If-Modified-Since, which alone would have given 304."""
    _, lm = current_etag(srv)
    r = fetch_until_close(
        srv.port, "/static/real.css", headers=[("If-None-Match", '"not-the-tag"')]
    )
    assert r.status == 200 and r.body == REAL_CSS, r
    r = fetch_until_close(
        srv.port,
        "/static/real.css",
        headers=[("If-None-Match", '"not-the-tag"'), ("If-Modified-Since", lm)],
    )
    assert r.status == 200 and r.body == REAL_CSS, r


def test_if_modified_since(srv):
    """If-Modified-Since at or after the file's mtime answers 304 (no body);
    a date before it answers 200 with the file."""
    _, lm = current_etag(srv)
    r = fetch_until_close(srv.port, "/static/real.css", headers=[("If-Modified-Since", lm)])
    assert r.status == 304 and r.body == b"", r
    later = http_date(email.utils.parsedate_to_datetime(lm).timestamp() + 3600)
    r = fetch_until_close(srv.port, "/static/real.css", headers=[("If-Modified-Since", later)])
    assert r.status == 304 and r.body == b"", r
    r = fetch_until_close(
        srv.port,
        "/static/real.css",
        headers=[("If-Modified-Since", "Mon, 01 Jan 1990 00:00:00 GMT")],
    )
    assert r.status == 200 and r.body == REAL_CSS, r


# --- ranges ----------------------------------------------------------------------

SIZE = len(RANGE_TXT)
RANGES = [
    ("bytes=0-9", 0, 9),
    ("bytes=-5", SIZE - 5, SIZE - 1),
    ("bytes=10-", 10, SIZE - 1),
]


@pytest.mark.parametrize("spec,first,last", RANGES, ids=[c[0] for c in RANGES])
def test_range(srv, spec, first, last):
    """A satisfiable single range answers 206 with
    `Content-Range: bytes FIRST-LAST/SIZE`, the matching Content-Length and
    exactly those bytes."""
    r = fetch_until_close(srv.port, "/static/range.txt", headers=[("Range", spec)])
    assert r.status == 206, r
    assert r.header("Content-Range") == f"bytes {first}-{last}/{SIZE}"
    assert r.body == RANGE_TXT[first : last + 1]
    assert r.header("Content-Length") == str(last - first + 1)


def test_range_not_satisfiable(srv):
    """A range starting past the end answers 416 with
    `Content-Range: bytes */SIZE` and none of the file."""
    r = fetch_until_close(srv.port, "/static/range.txt", headers=[("Range", "bytes=99999999-")])
    assert r.status == 416, r
    assert r.header("Content-Range") == f"bytes */{SIZE}"
    assert RANGE_TXT[:20] not in r.body


IF_RANGE = [
    ("current-etag", lambda tag: tag, 206),
    ("stale-etag", lambda tag: '"stale-tag"', 200),
    ("old-date", lambda tag: "Mon, 01 Jan 1990 00:00:00 GMT", 200),
]


@pytest.mark.parametrize("make,status", [c[1:] for c in IF_RANGE], ids=[c[0] for c in IF_RANGE])
def test_if_range(srv, make, status):
    """If-Range with the current ETag honours the Range (206, the ten
    bytes); with a stale ETag or a date older than the file the Range is
    ignored and the whole file is sent (200)."""
    tag, _ = current_etag(srv, "/static/range.txt")
    if_range = make(tag)
    r = fetch_until_close(
        srv.port, "/static/range.txt", headers=[("Range", "bytes=0-9"), ("If-Range", if_range)]
    )
    assert r.status == status, f"Range: bytes=0-9, If-Range: {if_range} -> {r.status}"
    assert r.body == (RANGE_TXT[:10] if status == 206 else RANGE_TXT)


# --- precompressed siblings ------------------------------------------------------

ENCODINGS = [
    ("br", X_CSS_BR, "br"),
    ("gzip", None, "gzip"),  # None: the .gz file's bytes
    (None, X_CSS, None),
]


@pytest.mark.parametrize("accept,expected,encoding", ENCODINGS, ids=["br", "gzip", "none"])
def test_precompressed_sibling(srv, tree, accept, expected, encoding):
    """With x.css, x.css.br and x.css.gz on disk, `Accept-Encoding: br`
    gets the .br bytes (Content-Encoding: br), `gzip` the .gz bytes
    (Content-Encoding: gzip), no Accept-Encoding the plain file (no
    Content-Encoding); the type stays text/css and every variant says
    `Vary: Accept-Encoding`."""
    if expected is None:
        expected = tree.files["x.css.gz"]
    headers = [("Accept-Encoding", accept)] if accept else []
    r = fetch_until_close(srv.port, "/static/x.css", headers=headers)
    assert r.status == 200, r
    assert r.body == expected
    assert r.header("Content-Length") == str(len(expected))
    assert r.header("Content-Encoding") == encoding
    assert (r.header("Content-Type") or "").startswith("text/css"), r.headers
    assert "accept-encoding" in header_tokens(",".join(r.header_all("Vary"))), r.headers


VALIDATORS = [
    ("If-None-Match", lambda r: r.header("ETag")),
    ("If-Modified-Since", lambda r: r.header("Last-Modified")),
]


@pytest.mark.parametrize("accept", ["br", "gzip", None], ids=["br", "gzip", "none"])
@pytest.mark.parametrize("validator", VALIDATORS, ids=[v[0] for v in VALIDATORS])
def test_not_modified_sends_what_its_200_would(srv, accept, validator):
    """RFC 9110 15.4.5: a 304 sends the fields its 200 would have sent among Cache-Control,
    Content-Location, Date, ETag, Expires and Vary: a file with precompressed siblings keeps
    its `Vary: Accept-Encoding`, so a cache stores the 304 under the right variant."""
    headers = [("Accept-Encoding", accept)] if accept else []
    full = fetch_until_close(srv.port, "/static/x.css", headers=headers)
    assert full.status == 200, full
    name, value_of = validator
    r = fetch_until_close(srv.port, "/static/x.css", headers=[*headers, (name, value_of(full))])
    assert r.status == 304 and r.body == b"", r
    for field in ("Cache-Control", "Content-Location", "ETag", "Expires", "Vary"):
        assert r.header_all(field) == full.header_all(field), (field, r.headers)
    assert "accept-encoding" in header_tokens(",".join(r.header_all("Vary"))), r.headers
    assert r.header("Date"), r.headers


# --- nothing outside the root ----------------------------------------------------

HOSTILE = [
    "/static/../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/..\\secret.txt",
    "/static/a/../../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/%00",
    "/static/x.css%00.txt",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/.env",
    "/static/.git/config",
    "/static/sub/.hidden",
    "/static/leak",
    "/static/escape/secret.txt",
    "/static/%c0%ae%c0%ae/secret.txt",
    "/static/%252e%252e/secret.txt",
    "/static/special/../../secret.txt",
    "/media/../secret.txt",
]

ABSOLUTE_FORM = (
    b"GET http://x/static/../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
)


def hostile_request(target):
    return (
        b"GET "
        + target.encode("latin-1")
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )


def assert_refused(port, request_bytes):
    r = send_until_close(port, request_bytes)
    assert r.status in (400, 404), f"{request_bytes[:80]!r} -> {r.status}: {r.body[:200]!r}"
    assert SECRET.encode() not in r.body, f"{request_bytes[:80]!r} leaked the secret"
    return r


@pytest.mark.parametrize("target", HOSTILE)
def test_nothing_outside_the_root(srv, target):
    """Traversal in every spelling (plain, percent-encoded in either case,
    encoded slashes and backslashes, NUL, overlong UTF-8, double encoding),
    empty segments, dotfiles inside the root and symlinks leading out of it:
    404 (or 400 if the request line is refused), and the secret beside the
    root never appears. Sent as raw bytes so no client normalizes them."""
    assert_refused(srv.port, hostile_request(target))


def test_absolute_form_traversal(srv):
    """An absolute-form request target (`GET http://x/static/../secret.txt`)
    is no way around the checks."""
    assert_refused(srv.port, ABSOLUTE_FORM)


def test_keeps_serving_after_hostile_requests(server, tree):
    """A fresh server that has been sent the whole hostile list (each one
    answered, none leaking the secret) still serves a normal file afterwards."""
    s = server(RECORDER, *tree.static_args())
    for req in [hostile_request(t) for t in HOSTILE] + [ABSOLUTE_FORM]:
        r = send_until_close(s.port, req)
        assert SECRET.encode() not in r.body, f"{req[:80]!r} leaked the secret"
    r = fetch_until_close(s.port, "/static/real.css")
    assert r.status == 200 and r.body == REAL_CSS, r


# --- large files -----------------------------------------------------------------


def test_large_file_streams_with_bounded_memory(srv):
    """A 1 GiB file is streamed, not loaded: the whole body arrives (every
    byte, all zero like the sparse file) while the server's resident memory
    grows by less than 64 MB."""
    zeros = bytes(4 << 20)
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    deadline = time.monotonic() + 60
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        with RssSampler(srv.pid) as rss:
            s.sendall(
                b"GET /static/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(65536)
                assert chunk, f"connection closed before the head: {head!r}"
                head += chunk
            head, _, first = head.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert f"content-length: {BIG_SIZE}".encode() in head.lower(), head
            assert zeros.startswith(first)
            received = len(first)
            while True:
                assert time.monotonic() < deadline, (
                    f"only {received} of {BIG_SIZE} bytes after 60 s"
                )
                n = s.recv_into(view)
                if n == 0:
                    break
                assert zeros.startswith(view[:n]), f"non-zero bytes near offset {received}"
                received += n
    assert received == BIG_SIZE
    print(f"RSS growth {rss.growth_mb:.1f} MB")
    assert rss.growth_mb < 64, f"server RSS grew {rss.growth_mb:.1f} MB serving 1 GiB"


# --- Python is never involved ----------------------------------------------------


def test_static_requests_never_reach_the_app(srv, record_file):
    """Every request under a mount (found, missing, directory, 304, 206,
    416, 405, hostile) is answered by the server without calling the WSGI
    app; a path outside the mounts (including one that merely starts with
    the same letters, /staticx) does reach it."""
    before = len(app_calls(record_file))
    tag, _ = current_etag(srv)
    requests_ = [
        ("GET", "/static/real.css", []),
        ("HEAD", "/static/real.css", []),
        ("GET", "/static/missing.css", []),
        ("GET", "/static/sub/", []),
        ("GET", "/static", []),
        ("GET", "/static/real.css", [("If-None-Match", tag)]),
        ("GET", "/static/range.txt", [("Range", "bytes=0-9")]),
        ("GET", "/static/range.txt", [("Range", "bytes=99999999-")]),
        ("DELETE", "/static/real.css", []),
        ("GET", "/static/../secret.txt", []),
        ("GET", "/static/.env", []),
        ("GET", "/media/photo.png", []),
        ("GET", "/media/missing.png", []),
        ("GET", "/static/special/only.txt", []),
    ]
    for method, target, headers in requests_:
        r = fetch_until_close(srv.port, target, method=method, headers=headers)
        assert r.header("X-From-App") is None, f"{method} {target} was answered by the app"
    assert app_calls(record_file)[before:] == [], "static requests reached the app"

    probe = f"/app-probe-{uuid.uuid4().hex}"
    r = fetch_until_close(srv.port, probe)
    assert r.status == 200 and r.body == f"app saw {probe}".encode(), r
    r = fetch_until_close(srv.port, "/staticx/real.css")
    assert r.status == 200 and r.body == b"app saw /staticx/real.css", r
    assert app_calls(record_file)[before:] == [f"GET {probe}", "GET /staticx/real.css"]


# --- embedded and Django ---------------------------------------------------------


def test_embedded_server_static(tree):
    """`bartizan.Server(app, port=0, static={"/static": dir})` serves the
    directory from Rust in this process; other paths go to the app, and the
    app is never called for the static file."""
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"app"]

    with bartizan.Server(app, port=0, static={"/static": str(tree.root)}) as s:
        r = fetch_until_close(s.port, "/static/real.css")
        assert r.status == 200 and r.body == REAL_CSS, r
        assert r.header("Cache-Control") == "public, max-age=3600"
        leak = fetch_until_close(s.port, "/static/leak")
        assert leak.status != 200 and SECRET.encode() not in leak.body, leak
        r = fetch_until_close(s.port, "/other")
        assert r.status == 200 and r.body == b"app", r
    assert calls == ["/other"]


@pytest.fixture(scope="module")
def demo(module_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    media = base / "media"
    media.mkdir()
    (media / "upload.txt").write_bytes(b"an uploaded file\n")
    return module_server(
        env={"BARTIZAN_DEMO_DB": str(base / "demo.sqlite3"), "BARTIZAN_DEMO_MEDIA": str(media)}
    )


def test_django_static_and_media_mounted(demo):
    """A Django app's STATIC_URL/STATIC_ROOT and MEDIA_URL/MEDIA_ROOT are
    mounted automatically: the demo's site.css and site.js and a file in
    its MEDIA_ROOT are served from Rust (Django itself serves no static
    files with DEBUG off)."""
    for name, ctype in (("site.css", "text/css"), ("site.js", "javascript")):
        r = fetch_until_close(demo.port, f"/static/demo/{name}")
        assert r.status == 200, r
        assert r.body == (DEMO_STATIC / "demo" / name).read_bytes()
        assert ctype in (r.header("Content-Type") or ""), r.headers
        assert r.header("ETag") and r.header("Cache-Control") == "public, max-age=3600", r.headers
    r = fetch_until_close(demo.port, "/media/upload.txt")
    assert r.status == 200 and r.body == b"an uploaded file\n", r
    r = requests.get(demo.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200 and "/static/demo/site.css" in r.text


def test_no_django_static_leaves_paths_to_django(server, tmp_path):
    """`--no-django-static` mounts nothing: /static/demo/site.css goes to
    Django, which answers its own 404 page."""
    s = server(
        "--no-django-static",
        env={
            "BARTIZAN_DEMO_DB": str(tmp_path / "demo.sqlite3"),
            "BARTIZAN_DEMO_MEDIA": str(tmp_path / "media"),
        },
    )
    r = requests.get(s.url + "/static/demo/site.css", timeout=TIMEOUT)
    assert r.status_code == 404
    assert "Page not found" in r.text
    assert r.content != (DEMO_STATIC / "demo" / "site.css").read_bytes()


def test_django_flag_without_django_is_a_user_error(server):
    """`--django` with an app that did not configure Django: one line, exit 2."""
    rc, err = server(RECORDER, "--django", wait=False).outcome()
    assert rc == 2, f"exit code {rc}; stderr:\n{err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "django" in lines[0].lower(), err
