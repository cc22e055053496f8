"""App for the request-timeout tests: views that never return on their own.

Routes:
- /ok              200 "ok"
- /stuck           waits inside `wait_in_the_view` until /release (at most 60 s)
- /stream          sends "first" and then waits the same way before the rest
- /release         lets every waiting view go on
- /stuck-count     how many views wait now
"""

import threading

_release = threading.Event()
_waiting = 0
_lock = threading.Lock()


def wait_in_the_view():
    global _waiting
    with _lock:
        _waiting += 1
    try:
        _release.wait(60)
    finally:
        with _lock:
            _waiting -= 1


def _stream():
    yield b"first"
    wait_in_the_view()
    yield b"rest"


def app(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/stuck":
        wait_in_the_view()
        start_response("200 OK", text)
        return [b"late"]
    if path == "/stream":
        start_response("200 OK", text)
        return _stream()
    if path == "/release":
        _release.set()
        start_response("200 OK", text)
        return [b"released"]
    if path == "/stuck-count":
        start_response("200 OK", text)
        return [str(_waiting).encode()]
    start_response("200 OK", text)
    return [b"ok"]
