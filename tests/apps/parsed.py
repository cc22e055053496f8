"""Answers with what the server parsed of the request, as JSON: method, target as sent, the
header fields as the environ carries them, and the body read whole. Used by the differential
test, which compares it with what other parsers make of the same bytes."""

import json


def app(environ, start_response):
    fields = {
        key: value
        for key, value in environ.items()
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }
    body = environ["wsgi.input"].read()
    answer = json.dumps(
        {
            "method": environ["REQUEST_METHOD"],
            "target": environ["RAW_URI"],
            "fields": fields,
            "body": body.decode("latin-1"),
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]
    )
    return [answer]
