"""An app whose requests wait or run GIL-free C code, for the pool's admission.

/io     sleeps 20 ms, as a request waiting on a database across the network
/cpu    hashlib.pbkdf2_hmac, 100,000 rounds (~19 ms here), C code without the GIL
other   a hello, as the cheap pages beside them
"""

import hashlib
import time

HELLO = b"Hello, World!"


def _reply(start_response, body):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/io":
        time.sleep(0.02)
        return _reply(start_response, b"waited")
    if path == "/cpu":
        digest = hashlib.pbkdf2_hmac("sha256", b"password", b"salt" * 4, 100_000)
        return _reply(start_response, digest.hex().encode())
    return _reply(start_response, HELLO)
