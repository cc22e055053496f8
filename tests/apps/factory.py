"""For --factory: `create` is called once, with no arguments, to build the app."""

CALLS = 0


def create():
    global CALLS
    CALLS += 1
    made_at_call = CALLS

    def app(environ, start_response):
        body = f"made by factory (factory calls: {made_at_call}, total: {CALLS})".encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app
