"""App for the process-lifecycle tests (workers, reloads, graceful stop, metrics).

At import time it reads:
- BARTIZAN_TEST_VERSION_FILE: a file whose text becomes VERSION, so a test can
  tell which import (before or after a reload) answers a request;
- BARTIZAN_TEST_FAIL_FLAG: if that file exists, the import raises, so a reload
  can be made to fail on purpose.

Routes:
- /            JSON: pid, version, wsgi.multiprocess, path
- /hello       plain text "hello\n" (fixed length)
- /empty       204, no body
- /sleep?s=F   sleeps F seconds (at most 10), then 200
- /block?go=P[&started=S]
               writes S (if given) once inside the app, then waits until the
               file P exists (at most 60 s), then 200 {"released": true}
- /grow?mb=N   keeps N MiB more memory for the life of the process
- /forever[?started=S]
               writes S (if given), then never returns on its own (it sleeps in a
               loop until the process is killed)
- anything else: 404
"""

import json
import os
import time
from urllib.parse import parse_qs

_flag = os.environ.get("BARTIZAN_TEST_FAIL_FLAG")
if _flag and os.path.exists(_flag):
    raise RuntimeError(f"import refused on purpose: {_flag} exists")

_version_file = os.environ.get("BARTIZAN_TEST_VERSION_FILE")
if _version_file:
    with open(_version_file, encoding="utf-8") as _f:
        VERSION = _f.read().strip()
else:
    VERSION = "none"

IMPORTED_AT = time.time()
_kept = []


def _qs(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _touch(path):
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))


def _send(start_response, status, body, ctype="text/plain"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _qs(environ)
    if path == "/":
        body = json.dumps(
            {
                "pid": os.getpid(),
                "version": VERSION,
                "multiprocess": environ.get("wsgi.multiprocess"),
                "path": path,
            }
        ).encode()
        return _send(start_response, "200 OK", body, "application/json")
    if path == "/hello":
        return _send(start_response, "200 OK", b"hello\n")
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/grow":
        # Written to, so the pages are resident and not only reserved.
        _kept.append(bytearray(b"x" * (int(q.get("mb", "1")) << 20)))
        return _send(start_response, "200 OK", b"grown\n")
    if path == "/sleep":
        time.sleep(min(float(q.get("s", "0.1")), 10.0))
        return _send(start_response, "200 OK", b"slept\n")
    if path == "/block":
        _touch(q.get("started"))
        go = q.get("go", "")
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)
        return _send(
            start_response,
            "200 OK",
            json.dumps({"released": os.path.exists(go)}).encode(),
            "application/json",
        )
    if path == "/forever":
        _touch(q.get("started"))
        while True:
            time.sleep(0.5)
    return _send(start_response, "404 Not Found", b"not found\n")
