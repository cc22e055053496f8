"""Helpers for the reverse-proxy tests: starting the proxy front
(`python -m bartizan proxy ...`) and app servers on fixed ports (so they can
be killed and started again on the same port), a self-signed certificate,
a raw WebSocket client, and an upstream whose answers a test writes byte for byte.

Every wait is bounded.
"""

import base64
import os
import shutil
import socket
import subprocess
import threading

import pytest

from tests.apps.ws_echo import FrameReader, accept_value, encode_frame
from tests.support.apps import PROXIED
from tests.support.process import split_url


def start_proxy(launcher, upstreams, *args, bind="127.0.0.1:0"):
    """`python -m bartizan proxy --bind BIND --upstream U ... ARGS`, started
    through the `server`/`module_server` fixture so teardown stops it."""
    argv = ["proxy", "--bind", bind]
    for u in upstreams:
        argv += ["--upstream", u]
    argv += list(args)
    return launcher(*argv, wait=False).wait_proxy_started()


def start_app(launcher, port=0, *args, app=PROXIED, tag=None, env=None):
    """An app server on 127.0.0.1:PORT (0: any free port)."""
    full_env = dict(env or {})
    if tag is not None:
        full_env["PROXY_TEST_TAG"] = tag
    return launcher(app, "--bind", f"127.0.0.1:{port}", *args, env=full_env)


def upstream_of(proc):
    host, port = split_url(proc.url)
    return f"{host}:{port}"


def make_self_signed(directory):
    """A self-signed certificate for localhost/127.0.0.1, made with the
    openssl command; skips the test when openssl is not installed."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("the openssl command is not installed: cannot make a test certificate")
    cert = os.path.join(directory, "c.pem")
    key = os.path.join(directory, "k.pem")
    try:
        r = subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                cert,
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            capture_output=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("openssl did not make a certificate within 60 s")
    if r.returncode != 0:
        pytest.skip(
            f"openssl could not make a test certificate: {r.stderr.decode(errors='replace')[-300:]}"
        )
    return cert, key


# ---------------------------------------------------------------------------
# WebSocket client over a RawConnection
# ---------------------------------------------------------------------------


def ws_handshake(conn, path="/ws", host="localhost"):
    """Sends an opening handshake; returns (response head, expected accept)."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    conn.send(
        (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        ).encode("latin-1")
    )
    _version, status, _reason, headers, _head = conn.read_head()
    return status, dict((k.lower(), v) for k, v in headers), accept_value(key)


def ws_send(conn, payload, opcode=0x1):
    conn.send(encode_frame(opcode, payload, mask_key=os.urandom(4)))


def ws_recv(conn):
    """The next frame from the server: (opcode, payload). Anything already
    buffered on the connection after the handshake is used first."""
    reader = FrameReader(conn.sock, conn.buf)
    fin, opcode, masked, payload = reader.read()
    conn.buf = reader.buf
    assert fin, "echo frames are unfragmented"
    assert not masked, "RFC 6455 5.1: a server must not mask frames it sends"
    return opcode, payload


# ---------------------------------------------------------------------------
# An upstream whose answers are bytes a test writes
# ---------------------------------------------------------------------------


class ScriptedUpstream:
    """An HTTP/1.1 upstream that answers each path with exactly the bytes a test gives, so
    the test decides the framing a proxy front must pass on. `answers` maps a path to bytes,
    to (bytes, close) where close ends the connection after writing, or to a function of the
    request (head and body) returning either. It keeps every request it read and counts
    connections; `drop[path] = n` closes the next n connections that ask for `path` without
    a word, after reading the request."""

    def __init__(self, answers):
        self.answers = answers
        self.requests = []
        self.connections = 0
        self.drop = {}
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def requests_for(self, path):
        with self._lock:
            return [(h, b) for h, b in self.requests if h.split(b" ")[1] == path.encode()]

    def close(self):
        self._sock.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                path = head.split(b" ")[1].decode("latin-1")
                with self._lock:
                    self.requests.append((head, body))
                    dropping = self.drop.get(path, 0) > 0
                    if dropping:
                        self.drop[path] -= 1
                if dropping:
                    return
                answer = self.answers[path]
                if callable(answer):
                    answer = answer(head, body)
                answer, close = answer if isinstance(answer, tuple) else (answer, False)
                conn.sendall(answer)
                if close:
                    conn.shutdown(socket.SHUT_RDWR)
                    return
