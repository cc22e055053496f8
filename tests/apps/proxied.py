"""App run behind the reverse proxy in the proxy tests.

Every answer is JSON unless the path says otherwise. The process is told
apart from its siblings by the PROXY_TEST_TAG environment variable, so a
test can see which upstream served a request.

Paths:
    /upload        streams wsgi.input through sha256; answers bytes + digest
                   (?delay=S: sleeps S seconds before it starts reading)
    /download?n=N  N bytes of counter blocks (see `download_bytes`), streamed
    /slow-stream   "first\\n", then 1.5 s later "second\\n"
    /sleep?s=S     sleeps S seconds, then answers
    /record-crash  appends the body to PROXY_TEST_RECORD, then kills its own
                   process mid-request (os._exit), never answering
    /health        503 while the file PROXY_TEST_UNHEALTHY exists, else 200
    anything else  tag, pid and the environ's string values
"""

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

BLOCK = 65536


def download_block(i):
    """Block i of a download: its 4-byte big-endian index, repeated. A
    dropped, repeated or reordered block changes the digest."""
    return i.to_bytes(4, "big") * (BLOCK // 4)


def download_bytes(n):
    """The whole download body of n bytes, for checking on the client side."""
    h = hashlib.sha256()
    i = 0
    left = n
    while left > 0:
        piece = download_block(i)[:left]
        h.update(piece)
        left -= len(piece)
        i += 1
    return h.hexdigest()


def _json(start_response, data, status="200 OK"):
    out = json.dumps(data).encode("utf-8")
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]


def _download(n):
    i = 0
    left = n
    while left > 0:
        piece = download_block(i)[:left]
        left -= len(piece)
        i += 1
        yield piece


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    qs = parse_qs(environ.get("QUERY_STRING", ""))

    if path == "/health":
        flag = os.environ.get("PROXY_TEST_UNHEALTHY")
        sick = bool(flag) and os.path.exists(flag)
        start_response("503 Service Unavailable" if sick else "200 OK", [("Content-Length", "0")])
        return [b""]
    if path == "/upload":
        # ?delay=S: wait before reading, so the body backs up behind us.
        time.sleep(float(qs.get("delay", ["0"])[0]))
        inp = environ["wsgi.input"]
        h = hashlib.sha256()
        total = 0
        while True:
            piece = inp.read(BLOCK)
            if not piece:
                break
            total += len(piece)
            h.update(piece)
        return _json(
            start_response,
            {
                "bytes": total,
                "sha256": h.hexdigest(),
                "content_length": environ.get("CONTENT_LENGTH"),
            },
        )

    if path == "/download":
        n = int(qs["n"][0])
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))]
        )
        return _download(n)

    if path == "/slow-stream":

        def gen():
            yield b"first\n"
            time.sleep(1.5)
            yield b"second\n"

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/sleep":
        time.sleep(float(qs["s"][0]))
        return _json(start_response, {"slept": True, "tag": os.environ.get("PROXY_TEST_TAG")})

    if path == "/record-crash":
        inp = environ["wsgi.input"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = inp.read(length) if length else inp.read()
        with open(os.environ["PROXY_TEST_RECORD"], "a", encoding="latin-1") as f:
            f.write(f"{os.environ.get('PROXY_TEST_TAG')} {body.decode('latin-1')}\n")
            f.flush()
            os.fsync(f.fileno())
        os._exit(17)

    return _json(
        start_response,
        {
            "tag": os.environ.get("PROXY_TEST_TAG"),
            "pid": os.getpid(),
            "environ": {k: v for k, v in environ.items() if isinstance(v, (str, int, bool))},
        },
    )
