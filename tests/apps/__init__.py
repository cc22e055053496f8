"""Small WSGI applications served by the server under test (imported by the server process)."""
