"""Speaking HTTP/1.x over raw sockets, so tests see the exact bytes on the
wire: one connection class, and one-request helpers built on it.

Every read has a timeout: a misbehaving server makes a test fail, never hang.
"""

import socket
import time

# Default socket timeout for a single read in a test.
IO_TIMEOUT = 5.0


class RawResponse:
    def __init__(self, version, status, reason, headers, body, complete, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) in wire order
        self.body = body
        self.complete = complete  # False if the connection ended mid-body
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name):
        return self.header(name) is not None

    def json(self):
        import json

        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"<RawResponse {self.status} {self.reason!r} headers={self.headers!r} body={self.body[:200]!r}>"


class ConnectionClosed(Exception):
    pass


def parse_head(head):
    """(version, status, reason, headers) of a response head (status line and
    header lines, with or without the final blank line)."""
    lines = head.removesuffix(b"\r\n\r\n").split(b"\r\n")
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    ok = (
        len(parts) >= 2
        and parts[0].startswith("HTTP/")
        and len(parts[1]) == 3
        and parts[1].isdigit()
    )
    assert ok, f"malformed status line from server: {status_line!r}"
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        assert sep, f"bad header line {line!r}"
        headers.append((name, value.strip()))
    return version, status, reason, headers


class RawConnection:
    """One TCP connection; requests are written as given, responses parsed by hand.

    With `source` (e.g. 127.0.0.2: Linux routes all of 127.0.0.0/8 to the
    loopback interface) the local end is bound to that address, so the server
    sees a peer other than 127.0.0.1."""

    def __init__(self, port, host="127.0.0.1", timeout=IO_TIMEOUT, source=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            if source is not None:
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.buf = b""
        self.host = host
        self.port = port

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def settimeout(self, t):
        self.sock.settimeout(t)

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(262144)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed()
        self.buf += chunk

    def read_until(self, delim, limit=1 << 20):
        while delim not in self.buf:
            if len(self.buf) > limit:
                raise AssertionError(f"no {delim!r} within {limit} bytes")
            self._fill()
        i = self.buf.index(delim) + len(delim)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_some(self):
        """Whatever is buffered, else the next recv (b'' on EOF)."""
        if self.buf:
            out, self.buf = self.buf, b""
            return out
        try:
            return self.sock.recv(262144)
        except ConnectionResetError:
            return b""

    def read_to_eof(self, timeout=IO_TIMEOUT):
        """Everything until the peer closes; times out rather than hangs."""
        deadline = time.monotonic() + timeout
        out = self.buf
        self.buf = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"connection still open after {timeout}s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(262144)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk

    def is_closed_by_peer(self, timeout=IO_TIMEOUT):
        """True if the server closes the connection (EOF/RST) within timeout
        without sending anything more."""
        try:
            rest = self.read_to_eof(timeout)
        except TimeoutError:
            return False
        assert rest == b"", f"unexpected bytes after response: {rest[:200]!r}"
        return True

    def read_head(self):
        head = self.read_until(b"\r\n\r\n")
        return (*parse_head(head), head)

    def read_response(self, method="GET"):
        """Read one response; the body is framed by Transfer-Encoding,
        Content-Length, or connection close (RFC 9112 section 6.3)."""
        version, status, reason, headers, head = self.read_head()
        resp = RawResponse(version, status, reason, headers, b"", True, head)
        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        body = bytearray()
        try:
            if "chunked" in te:
                while True:
                    size_line = self.read_until(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        # trailers until an empty line
                        while self.read_until(b"\r\n") != b"\r\n":
                            pass
                        break
                    body += self.read_exact(size)
                    assert self.read_exact(2) == b"\r\n", "chunk not followed by CRLF"
            elif cl is not None:
                n = int(cl)
                while len(body) < n:
                    if not self.buf:
                        self._fill()
                    take = min(n - len(body), len(self.buf))
                    body += self.buf[:take]
                    self.buf = self.buf[take:]
            else:
                body += self.read_to_eof()
        except ConnectionClosed:
            body += self.buf
            self.buf = b""
            resp.complete = False
        resp.body = bytes(body)
        return resp

    def request(self, method, target, headers=(), body=b"", version="HTTP/1.1"):
        self.send(
            build_request(method, target, headers, body, version, host=f"{self.host}:{self.port}")
        )
        return self.read_response(method)


def build_request(method, target, headers=(), body=b"", version="HTTP/1.1", host="localhost"):
    """Serialize a request. A Host header is added for HTTP/1.1 unless given
    (pass ("Host", None) to omit it); Content-Length is added for a body
    unless a framing header is given."""
    headers = list(headers)
    names = {k.lower() for k, _ in headers}
    lines = [f"{method} {target} {version}"]
    if "host" not in names and version == "HTTP/1.1":
        lines.append(f"Host: {host}")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    for k, v in headers:
        if v is None:
            continue
        lines.append(f"{k}: {v}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data + body


def chunked(*pieces, trailers=()):
    """Encode body pieces with chunked transfer coding."""
    out = b""
    for p in pieces:
        if p:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
    out += b"0\r\n"
    for k, v in trailers:
        out += f"{k}: {v}\r\n".encode("latin-1")
    return out + b"\r\n"


# ---------------------------------------------------------------------------
# One request on a fresh connection
# ---------------------------------------------------------------------------


def raw_request(
    port,
    method,
    target,
    headers=(),
    body=b"",
    version="HTTP/1.1",
    host="127.0.0.1",
    timeout=IO_TIMEOUT,
):
    """One request on a fresh connection; the response body is framed as
    the response headers say."""
    with RawConnection(port, host=host, timeout=timeout) as c:
        return c.request(method, target, headers, body, version)


def send_until_close(port, request_bytes, timeout=IO_TIMEOUT):
    """Send exact request bytes on a fresh connection; the response's `body`
    is every byte after the head until the server closes, unparsed, so a
    test sees exactly what went on the wire (e.g. no body bytes after HEAD
    or 304)."""
    with RawConnection(port, timeout=timeout) as c:
        c.send(request_bytes)
        try:
            data = c.read_to_eof(timeout)
        except TimeoutError:
            raise AssertionError(
                f"connection still open {timeout}s after {request_bytes[:200]!r}"
            ) from None
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head for {request_bytes[:200]!r}: {data[:300]!r}"
    version, status, reason, headers = parse_head(head)
    return RawResponse(version, status, reason, headers, body, True, head + sep)


def fetch_until_close(port, target, method="GET", headers=(), timeout=IO_TIMEOUT):
    """`send_until_close` for one request with `Connection: close`."""
    request = build_request(
        method, target, [("Connection", "close"), *headers], host=f"127.0.0.1:{port}"
    )
    return send_until_close(port, request, timeout=timeout)


def header_tokens(value):
    """`Accept-Encoding, Origin` -> {'accept-encoding', 'origin'}."""
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


# ---------------------------------------------------------------------------
# Which loopback addresses a connection can use here
# ---------------------------------------------------------------------------


def have_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def can_bind_source(source):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((source, 0))
        return True
    except OSError:
        return False
    finally:
        s.close()
