"""Records every call it gets: one line per request (METHOD PATH_INFO) appended
to the file named by BARTIZAN_TEST_RECORD, so a test can tell which requests
reached Python. Answers `app saw PATH` in plain text."""

import os


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    record = os.environ.get("BARTIZAN_TEST_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write(f"{environ.get('REQUEST_METHOD')} {path}\n")
    body = f"app saw {path}".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("X-From-App", "yes")],
    )
    return [body]
