"""A plain app wrapped in wsgiref.validate.validator, which checks both sides
of the WSGI contract (the server's environ, start_response, write, input and
errors streams, and that close() is called).

The validator reports problems as AssertionError, as WSGIWarning, or (for
an iterator never closed) from __del__. All three are recorded in the file
named by $BARTIZAN_TEST_VALIDATOR_LOG, which the test expects to stay empty.
"""

import os
import sys
import threading
import traceback
import warnings
from wsgiref.validate import validator

LOG = os.environ.get("BARTIZAN_TEST_VALIDATOR_LOG")
_lock = threading.Lock()


def record(kind, text):
    if not LOG:
        return
    with _lock, open(LOG, "a") as f:
        f.write(f"--- {kind}\n{text}\n")


# Warnings: report every one, once per occurrence.
warnings.simplefilter("always")
_orig_showwarning = warnings.showwarning


def _showwarning(message, category, filename, lineno, file=None, line=None):
    record("warning", f"{category.__name__}: {message} ({filename}:{lineno})")
    _orig_showwarning(message, category, filename, lineno, file, line)


warnings.showwarning = _showwarning

# The validator's "iterator garbage collected without being closed" is
# raised from __del__ and so only reaches sys.unraisablehook.
_orig_unraisable = sys.unraisablehook


def _unraisable(args):
    record("unraisable", f"{args.exc_type.__name__}: {args.exc_value} in {args.object!r}")
    _orig_unraisable(args)


sys.unraisablehook = _unraisable


def inner(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    environ["wsgi.errors"].write(f"validated app: {method} {path}\n")
    environ["wsgi.errors"].flush()

    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        first = environ["wsgi.input"].readline()
        rest = environ["wsgi.input"].read(length - len(first)) if length > len(first) else b""
        body = first + rest
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
        )
        return [body]

    if path == "/gen":

        def gen():
            for i in range(5):
                yield b"chunk %d\n" % i

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]

    body = b"validated hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


_validated = validator(inner)


class _Recording:
    """Forwards iteration and close() to the validator's iterator, logging
    any exception it raises on the way."""

    def __init__(self, it):
        self.it = it

    def __iter__(self):
        try:
            yield from self.it
        except Exception:
            record("iteration", traceback.format_exc())
            raise

    def close(self):
        try:
            self.it.close()
        except Exception:
            record("close", traceback.format_exc())
            raise


def app(environ, start_response):
    try:
        return _Recording(_validated(environ, start_response))
    except Exception:
        record("call", traceback.format_exc())
        raise
