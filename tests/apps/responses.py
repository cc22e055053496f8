"""Apps exercising the response side of WSGI: write(), generators, close(),
wsgi.file_wrapper, exc_info, Content-Length.

Coordination with the test process goes through files whose paths come in
the query string: the test creates a "go" file to let the app continue, and
the app writes a marker file (e.g. from close()) for the test to wait on.
"""

import json
import os
import sys
import time
from urllib.parse import parse_qs

CHUNK = b"z" * 65536


def _qs(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _wait_for_file(path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.01)
    return False


def _write_marker(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # atomic: the test never sees a half-written file


class ClosingIterable:
    """Yields `count` chunks (each after `delay` s); close() records how far
    iteration got, so the test can tell 'closed early' from 'finished'."""

    def __init__(self, marker, count, delay, chunk):
        self.marker = marker
        self.count = count
        self.delay = delay
        self.chunk = chunk
        self.sent = 0
        self.finished = False

    def __iter__(self):
        for _ in range(self.count):
            if self.delay:
                time.sleep(self.delay)
            self.sent += 1
            yield self.chunk
        self.finished = True

    def close(self):
        _write_marker(self.marker, json.dumps({"sent": self.sent, "finished": self.finished}))


class ReadOnlyFilelike:
    """A file-like object with only read() and close(): PEP 3333 lets
    file_wrapper accept any object with read()."""

    def __init__(self, data, marker):
        self.data = data
        self.pos = 0
        self.marker = marker

    def read(self, size=-1):
        if size is None or size < 0:
            size = len(self.data) - self.pos
        out = self.data[self.pos : self.pos + size]
        self.pos += len(out)
        return out

    def close(self):
        _write_marker(self.marker, "closed")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _qs(environ)

    if path == "/write":
        # The legacy write() callable, alone and followed by an iterable.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"hello ")
        write(b"")
        write(b"world")
        return [b"", b"!"]

    if path == "/stream":
        # First chunk, then wait for the test's go-file before the second:
        # the client can only see "first" in time if it was sent at once.
        go = q["go"]

        def gen():
            yield b"first\n"
            ok = _wait_for_file(go, 10)
            yield b"second\n" if ok else b"second (go-file never appeared)\n"

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/big":
        size = int(q["size"])
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl") == "1":
            headers.append(("Content-Length", str(size)))

        def gen():
            left = size
            while left > 0:
                piece = CHUNK if left >= len(CHUNK) else CHUNK[:left]
                left -= len(piece)
                yield piece

        start_response("200 OK", headers)
        return gen()

    if path == "/close":
        # Normal completion: a small iterable with close().
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingIterable(q["marker"], count=3, delay=0, chunk=b"part\n")

    if path == "/close-slow":
        # An endless-looking stream (bounded at ~60 s) the client abandons.
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return ClosingIterable(q["marker"], count=3000, delay=0.02, chunk=CHUNK)

    if path == "/close-head":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return ClosingIterable(q["marker"], count=2, delay=0, chunk=b"hello")

    if path == "/file":
        fw = environ["wsgi.file_wrapper"]
        f = open(q["path"], "rb")
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl") == "1":
            headers.append(("Content-Length", str(os.path.getsize(q["path"]))))
        start_response("200 OK", headers)
        return fw(f, 8192)

    if path == "/file-offset":
        # PEP 3333: transmission starts at the file's current position.
        fw = environ["wsgi.file_wrapper"]
        f = open(q["path"], "rb")
        f.seek(int(q["offset"]))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return fw(f)

    if path == "/filelike":
        fw = environ["wsgi.file_wrapper"]
        obj = ReadOnlyFilelike(b"from a read()-only object\n" * 1000, q["marker"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return fw(obj, 4096)

    if path == "/exc-info-replace":
        # start_response, then an error before any body: calling it again
        # with exc_info replaces the status and headers.
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise ValueError("problem found after start_response")
        except ValueError:
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "text/plain"), ("X-Second", "1")],
                sys.exc_info(),
            )
        return [b"replaced"]

    if path == "/start-twice-no-exc-info":
        # Calling start_response a second time without exc_info is an error
        # the server must raise.
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("201 Created", [("Content-Type", "text/plain")])
        except Exception as e:
            return [b"raised " + type(e).__name__.encode()]
        return [b"did not raise"]

    if path == "/content-length-short":
        # Claims 5 bytes, yields 11: the server sends no more than 5.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello", b" world"]

    if path == "/content-length-exact":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
        return [b"hello", b" ", b"world"]

    if path == "/content-length-missing-bytes":
        # Claims 100 bytes, yields 5: the response cannot be completed.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return [b"short"]

    if path == "/sleep":
        time.sleep(float(q.get("t", "0")))
        body = path.encode() + b"?" + environ["QUERY_STRING"].encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    if path == "/status":
        code = q["code"]
        start_response(code, [("Content-Type", "text/plain")])
        return [b""] if code.startswith(("204", "304")) else [code.encode()]

    if path == "/headers":
        # Repeated Set-Cookie and a latin-1 header value.
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; Path=/"),
                ("X-Latin", "caf\u00e9"),
                ("Content-Length", "0"),
            ],
        )
        return []

    if path == "/empty":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    body = path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
