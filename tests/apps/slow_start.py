"""An app whose import takes BARTIZAN_TEST_IMPORT_DELAY seconds, so a test can act on its
workers while they start. Answers with the pid of the worker that served."""

import os
import time

time.sleep(float(os.environ.get("BARTIZAN_TEST_IMPORT_DELAY", "0")))


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
