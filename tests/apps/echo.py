"""Echo app: answers with the WSGI environ it was given, as JSON.

Only str/int/bool values are copied verbatim; the wsgi.* objects are
described (type names, which methods exist) since they can't be serialized.
"""

import hashlib
import json

FIXED_BODY = b"a fixed body, the same for GET and HEAD\n"


def describe_wsgi(environ):
    inp = environ.get("wsgi.input")
    err = environ.get("wsgi.errors")
    version = environ.get("wsgi.version")
    return {
        "version": list(version) if isinstance(version, tuple) else repr(version),
        "version_type": type(version).__name__,
        "url_scheme": environ.get("wsgi.url_scheme"),
        "multithread": environ.get("wsgi.multithread"),
        "multiprocess": environ.get("wsgi.multiprocess"),
        "run_once": environ.get("wsgi.run_once"),
        "has_input": "wsgi.input" in environ,
        "has_errors": "wsgi.errors" in environ,
        "input_methods": sorted(
            m for m in ("read", "readline", "readlines", "__iter__") if hasattr(inp, m)
        ),
        "errors_methods": sorted(m for m in ("write", "writelines", "flush") if hasattr(err, m)),
        "file_wrapper_callable": callable(environ.get("wsgi.file_wrapper")),
    }


def read_body(environ):
    inp = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return inp.read(int(length))
    # No length: a chunked body (or none); read() without a size returns the
    # rest of the stream (PEP 3333, "Input and Error Streams").
    return inp.read()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/fixed":
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(FIXED_BODY))),
                ("X-Fixed", "yes"),
            ],
        )
        return [FIXED_BODY]
    if path == "/fixed-stream":
        # No Content-Length: the server must frame it itself (chunked or close).
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Fixed", "yes")])
        return iter([b"streamed ", b"fixed ", b"body\n"])

    body = read_body(environ)
    data = {
        "environ": {k: v for k, v in environ.items() if isinstance(v, (str, int, bool))},
        "cgi_types": {k: type(v).__name__ for k, v in environ.items() if "." not in k},
        "environ_type": type(environ).__name__,
        "wsgi": describe_wsgi(environ),
        "body": body.decode("latin-1"),
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    out = json.dumps(data).encode("utf-8")
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]
