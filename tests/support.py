"""Helpers for the end-to-end tests: running the server as a real process and
speaking HTTP/1.x over raw sockets, so tests see the exact bytes on the wire.

Every blocking operation here has a timeout: a misbehaving server makes a
test fail, never hang.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Generous: the demo site imports Django before the server starts listening.
START_TIMEOUT = 30.0
# Default socket timeout for a single read in a test.
IO_TIMEOUT = 5.0

START_LINE_RE = re.compile(
    r"^bartizan: listening on (?P<urls>http://\S+(?:, http://\S+)*) "
    r"\(threads: (?P<threads>\d+)\)$"
)


class ServerStartError(AssertionError):
    pass


def _pump(stream, lines, cond):
    """Read a child pipe line by line so it never fills and blocks the child."""
    for raw in iter(stream.readline, b""):
        with cond:
            lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
            cond.notify_all()
    stream.close()
    with cond:
        lines.append(None)  # EOF marker
        cond.notify_all()


def _die_with_parent():
    """Runs in the child before exec: if the test process dies (even by
    SIGKILL), the kernel kills the server too, so no server outlives a run."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


# Every server started and not yet stopped, for the hang watchdog.
LIVE = set()


def split_url(url):
    parts = urlsplit(url)
    return parts.hostname, parts.port


class ServerProcess:
    """`python -m bartizan ARGS` in its own process group.

    The process group lets teardown stop the server and anything it spawned
    with one signal addressed by id.
    """

    def __init__(self, args, env=None, python_args=(), cwd=ROOT, module_args=("-m", "bartizan")):
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self.args = [PYTHON, *python_args, *module_args, *args]
        self.proc = subprocess.Popen(
            self.args,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.pid = self.proc.pid
        LIVE.add(self)
        self._cond = threading.Condition()
        self._stderr = []
        self._stdout = []
        self._threads = [
            threading.Thread(
                target=_pump, args=(self.proc.stderr, self._stderr, self._cond), daemon=True
            ),
            threading.Thread(
                target=_pump, args=(self.proc.stdout, self._stdout, self._cond), daemon=True
            ),
        ]
        for t in self._threads:
            t.start()
        self.start_line = None
        self.urls = []
        self.threads = None

    # -- output -------------------------------------------------------
    def stderr_lines(self):
        with self._cond:
            return [line for line in self._stderr if line is not None]

    def stderr_text(self):
        return "\n".join(self.stderr_lines())

    def stdout_text(self):
        with self._cond:
            return "\n".join(line for line in self._stdout if line is not None)

    def _stderr_closed(self):
        return None in self._stderr

    def wait_started(self, timeout=START_TIMEOUT):
        """Wait for the start line and parse the listening URL(s) from it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._stderr:
                    if line is not None and line.startswith("bartizan: listening on"):
                        m = START_LINE_RE.match(line)
                        if not m:
                            raise ServerStartError(f"malformed start line: {line!r}")
                        self.start_line = line
                        self.urls = m.group("urls").split(", ")
                        self.threads = int(m.group("threads"))
                        return self
                if self._stderr_closed() or self.proc.poll() is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.2))
        self.stop()
        raise ServerStartError(
            f"server did not report listening within {timeout}s "
            f"(exit code {self.proc.returncode}); stderr:\n{self.stderr_text()}"
        )

    # -- addresses ----------------------------------------------------
    @property
    def url(self):
        return self.urls[0]

    @property
    def host(self):
        return split_url(self.url)[0]

    @property
    def port(self):
        return split_url(self.url)[1]

    def __str__(self):
        return self.url

    # -- lifecycle ----------------------------------------------------
    def wait_exit(self, timeout):
        """Return the exit code, or raise subprocess.TimeoutExpired."""
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=2)
        return rc

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        LIVE.discard(self)
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # Anything left in the group (the server ignored SIGTERM, or a child
        # outlived it) is killed outright.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(timeout=2)

    # -- measurements -------------------------------------------------
    def rss_kb(self):
        return rss_kb(self.pid)


def tree_pids(pid):
    """`pid` and all its descendants: the CLI serves from worker processes."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def rss_kb(pid):
    """Resident memory of the server: the process and its workers together."""
    total, seen = 0, False
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        seen = True
        except OSError:
            pass
    if not seen:
        raise AssertionError(f"no VmRSS for pid {pid}")
    return total


class RssSampler:
    """Samples a process's resident set size in a thread; records the peak."""

    def __init__(self, pid, interval=0.02):
        self.pid = pid
        self.interval = interval
        self.baseline = rss_kb(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kb(self.pid))
            except (OSError, AssertionError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.peak = max(self.peak, rss_kb(self.pid))
        except (OSError, AssertionError):
            pass

    @property
    def growth_mb(self):
        return (self.peak - self.baseline) / 1024.0


# ---------------------------------------------------------------------------
# Raw HTTP/1.x over sockets
# ---------------------------------------------------------------------------


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


class RawConnection:
    """One TCP connection; requests are written as given, responses parsed by hand."""

    def __init__(self, port, host="127.0.0.1", timeout=IO_TIMEOUT):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
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
        lines = head[:-4].split(b"\r\n")
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
        return version, status, reason, headers, head

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
    """One request on a fresh connection."""
    with RawConnection(port, host=host, timeout=timeout) as c:
        return c.request(method, target, headers, body, version)


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    return predicate()


def port_refuses(port, host="127.0.0.1", timeout=2.0):
    """True if a TCP connect to the port is refused (nothing listening)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()
    return False


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


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


def read_marker_file(path, timeout):
    """Wait (bounded) for a marker file written by an app in the server
    process; its text, or None if it never appeared."""
    if not wait_for(lambda: os.path.exists(path), timeout):
        return None
    with open(path) as f:
        return f.read()
