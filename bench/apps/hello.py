"""Smallest useful WSGI app: measures the server, not the framework."""

BODY = b"Hello, World!"
HEADERS = (("Content-Type", "text/plain"), ("Content-Length", str(len(BODY))))


def app(environ, start_response):
    # A fresh list each call: some servers append to the list they are given.
    start_response("200 OK", list(HEADERS))
    return [BODY]
