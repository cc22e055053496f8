"""Apps that break the WSGI contract in the ways a server must survive.

The exception messages carry a token that must never reach the client."""

import json
import os
import sys
import time
from urllib.parse import parse_qs

SECRET = "s3cr3t-internal-detail"


def _qs(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _write_marker(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


BAD_STATUS = {
    "no-space": "200OK",
    "letters": "abc",
    "two-digits": "20 OK",
    "int": 200,
    "bytes": b"200 OK",
}

BAD_HEADERS = {
    "bytes-name": [(b"X-Bytes", "v")],
    "int-value": [("X-Int", 5)],
    "crlf-in-value": [("X-Evil", "a\r\nInjected: yes")],
    "lf-in-value": [("X-Evil", "a\nInjected: yes")],
    "crlf-in-name": [("X-Evil\r\nInjected", "yes")],
    "colon-in-name": [("X-Bad:Name", "v")],
    "hop-connection": [("Connection", "close")],
    "hop-keep-alive": [("Keep-Alive", "timeout=5")],
    "hop-transfer-encoding": [("Transfer-Encoding", "chunked")],
    "hop-upgrade": [("Upgrade", "websocket")],
    "not-a-pair": [("X-Only-Name",)],
    "non-latin1-value": [("X-Euro", "\u20ac")],
}


class RaisingIterable:
    """Yields `good` chunks, then raises; close() records that it ran."""

    def __init__(self, good, marker):
        self.good = good
        self.marker = marker

    def __iter__(self):
        yield from self.good
        raise RuntimeError(f"failure while iterating {SECRET}")

    def close(self):
        if self.marker:
            _write_marker(self.marker, "closed")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _qs(environ)

    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    if path == "/raise":
        raise RuntimeError(f"app failed before start_response {SECRET}")

    if path == "/raise-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError(f"app failed after start_response {SECRET}")

    if path == "/raise-in-first-iteration":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return RaisingIterable([], q.get("marker"))

    if path == "/no-start-response":
        return [b"body without start_response"]

    if path == "/return-none":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return None

    if path == "/yield-str":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["text, not bytes"]

    if path.startswith("/bad-status/"):
        start_response(BAD_STATUS[path.rsplit("/", 1)[1]], [("Content-Type", "text/plain")])
        return [b"should not be sent"]

    if path.startswith("/bad-header/"):
        start_response(
            "200 OK", [("Content-Type", "text/plain")] + BAD_HEADERS[path.rsplit("/", 1)[1]]
        )
        return [b"should not be sent"]

    if path == "/abort-sized":
        # Headers and part of a 1 MB body, then an exception.
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", "1000000")]
        )
        return RaisingIterable([b"x" * 1000, b"y" * 1000], q.get("marker"))

    if path == "/abort-chunked":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return RaisingIterable([b"x" * 1000, b"y" * 1000], q.get("marker"))

    if path == "/exc-info-after-headers":
        # PEP 3333: with headers already sent, start_response(..., exc_info)
        # must re-raise; the app lets it propagate.
        def gen():
            yield b"partial body"
            try:
                raise ValueError(f"late failure {SECRET}")
            except ValueError:
                start_response(
                    "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
                )
            yield b"start_response did not raise"

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/block":
        # Holds its worker until the go-file exists (bounded at 15 s).
        go = q["go"]
        deadline = time.monotonic() + 15
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        body = json.dumps({"released": os.path.exists(go)}).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
