"""Copied into a temporary directory by the --reload test, which then rewrites
MESSAGE in the copy and expects the server to pick the new text up."""

MESSAGE = "first edition"


def app(environ, start_response):
    body = MESSAGE.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
