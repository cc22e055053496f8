"""Counts how many requests are inside each kind of work at once, and the most
seen, so a test can read the pool's concurrency off the app itself.

    /sleep    time.sleep(0.02): a wait off the GIL, as on a database
    /hash     hashlib.pbkdf2_hmac: C code on a core, off the GIL
    /python   20 ms of pure Python: holds the GIL throughout
    /most     the most seen of each, as JSON
"""

import hashlib
import json
import threading
import time

_lock = threading.Lock()
_now = {"sleep": 0, "hash": 0, "python": 0}
_most = dict(_now)


def _enter(kind):
    with _lock:
        _now[kind] += 1
        _most[kind] = max(_most[kind], _now[kind])


def _leave(kind):
    with _lock:
        _now[kind] -= 1


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


WORK = {
    "/sleep": ("sleep", lambda: time.sleep(0.02)),
    "/hash": ("hash", lambda: hashlib.pbkdf2_hmac("sha256", b"pw", b"salt" * 4, 300_000)),
    "/python": ("python", lambda: _spin(0.02)),
}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path in WORK:
        kind, work = WORK[path]
        _enter(kind)
        try:
            work()
        finally:
            _leave(kind)
        body = b"done"
    elif path == "/most":
        with _lock:
            body = json.dumps(_most).encode()
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
