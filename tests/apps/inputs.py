"""Apps that read wsgi.input in the different ways PEP 3333 allows.

Each answers with JSON describing what it read, so the test can check both
the bytes and how they were delivered (piece sizes, line splits, types).
"""

import hashlib
import json
from urllib.parse import parse_qs


def _json(start_response, data, status="200 OK"):
    out = json.dumps(data).encode("utf-8")
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]


def _types(pieces):
    return sorted({type(p).__name__ for p in pieces})


def app(environ, start_response):
    inp = environ["wsgi.input"]
    path = environ["PATH_INFO"]
    qs = parse_qs(environ.get("QUERY_STRING", ""))

    if path == "/read-n":
        # read(n) until EOF: every piece must be at most n bytes.
        n = int(qs["n"][0])
        pieces = []
        while True:
            piece = inp.read(n)
            if not piece:
                break
            pieces.append(piece)
        return _json(
            start_response,
            {
                "sizes": [len(p) for p in pieces],
                "types": _types(pieces),
                "body": b"".join(pieces).decode("latin-1"),
            },
        )

    if path == "/read-all":
        # read() with no size returns the rest; a second read() is at EOF.
        first = inp.read()
        again = inp.read()
        again_n = inp.read(10)
        return _json(
            start_response,
            {
                "body": first.decode("latin-1"),
                "types": _types([first, again]),
                "again": again.decode("latin-1"),
                "again_n": again_n.decode("latin-1"),
            },
        )

    if path == "/read-past-length":
        # Ask for more than CONTENT_LENGTH: the server simulates EOF at the
        # end of the body rather than blocking for bytes that never come.
        want = int(environ.get("CONTENT_LENGTH") or 0) + 1000
        got = inp.read(want)
        more = inp.read(10)
        return _json(
            start_response, {"body": got.decode("latin-1"), "more": more.decode("latin-1")}
        )

    if path == "/readline":
        lines = []
        while True:
            line = inp.readline()
            if not line:
                break
            lines.append(line)
        return _json(
            start_response, {"lines": [x.decode("latin-1") for x in lines], "types": _types(lines)}
        )

    if path == "/readlines":
        lines = inp.readlines()
        return _json(
            start_response,
            {
                "lines": [x.decode("latin-1") for x in lines],
                "types": _types(lines),
                "list": type(lines).__name__,
            },
        )

    if path == "/iter":
        lines = [line for line in inp]
        return _json(
            start_response, {"lines": [x.decode("latin-1") for x in lines], "types": _types(lines)}
        )

    if path == "/mixed":
        # The methods share one stream position.
        a = inp.read(3)
        b = inp.readline()
        c = inp.read()
        return _json(
            start_response,
            {"parts": [a.decode("latin-1"), b.decode("latin-1"), c.decode("latin-1")]},
        )

    if path == "/hash":
        # Streams the body in 64 KB pieces, keeping nothing but a digest.
        h = hashlib.sha256()
        total = 0
        biggest = 0
        while True:
            piece = inp.read(65536)
            if not piece:
                break
            total += len(piece)
            biggest = max(biggest, len(piece))
            h.update(piece)
        return _json(
            start_response, {"bytes": total, "sha256": h.hexdigest(), "biggest_piece": biggest}
        )

    if path == "/noread":
        # Ignores the body entirely.
        return _json(start_response, {"ignored": True})

    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such path"]
