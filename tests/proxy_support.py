"""Helpers for the reverse-proxy and forwarded-header tests: starting the
proxy front (`python -m bartizan proxy ...`), app servers on fixed ports
(so they can be killed and started again on the same port), connections
from a chosen loopback source address, a self-signed certificate, and a
raw WebSocket client.

Every wait is bounded.
"""

import base64
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from tests.apps.ws_echo import FrameReader, accept_value, encode_frame
from tests.support import (
    IO_TIMEOUT,
    LIVE,
    START_TIMEOUT,
    RawConnection,
    ServerStartError,
    split_url,
    wait_for,
)

PROXY_LINE_RE = re.compile(
    r"^bartizan: proxy listening on (?P<urls>https?://\S+(?:, https?://\S+)*) -> (?P<ups>\S+(?:, \S+)*)$"
)

PROXIED = "tests.apps.proxied:app"


def wait_proxy_started(proc, timeout=START_TIMEOUT):
    """Wait for the proxy's start line; fills proc.urls from it."""

    def line():
        for text in proc.stderr_lines():
            if text.startswith("bartizan: proxy listening on"):
                return text
        if proc.proc.poll() is not None:
            return "exited"
        return None

    found = wait_for(line, timeout)
    if not found or found == "exited":
        proc.stop()
        raise ServerStartError(
            f"proxy did not report listening within {timeout}s (exit code {proc.proc.returncode}); "
            f"stderr:\n{proc.stderr_text()}"
        )
    m = PROXY_LINE_RE.match(found)
    if not m:
        proc.stop()
        raise ServerStartError(f"malformed proxy start line: {found!r}")
    proc.start_line = found
    proc.urls = m.group("urls").split(", ")
    proc.upstreams = m.group("ups").split(", ")
    return proc


def start_proxy(launcher, upstreams, *args, bind="127.0.0.1:0"):
    """`python -m bartizan proxy --bind BIND --upstream U ... ARGS`, started
    through the `server`/`module_server` fixture so teardown stops it."""
    argv = ["proxy", "--bind", bind]
    for u in upstreams:
        argv += ["--upstream", u]
    argv += list(args)
    proc = launcher(*argv, wait=False)
    return wait_proxy_started(proc)


def start_app(launcher, port=0, *args, app=PROXIED, tag=None, env=None):
    """An app server on 127.0.0.1:PORT (0: any free port)."""
    full_env = dict(env or {})
    if tag is not None:
        full_env["PROXY_TEST_TAG"] = tag
    return launcher(app, "--bind", f"127.0.0.1:{port}", *args, env=full_env)


def kill_now(proc):
    """SIGKILL the server's whole process group: no graceful anything."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server {proc.pid} still alive 5 s after SIGKILL") from None
    LIVE.discard(proc)


def upstream_of(proc):
    host, port = split_url(proc.url)
    return f"{host}:{port}"


class SourceConnection(RawConnection):
    """A RawConnection whose local end is bound to `source` (e.g. 127.0.0.2:
    Linux routes all of 127.0.0.0/8 to the loopback interface), so the server
    sees a peer other than 127.0.0.1."""

    def __init__(self, port, source, host="127.0.0.1", timeout=IO_TIMEOUT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.bind((source, 0))
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.buf = b""
        self.host = host
        self.port = port


def can_bind_source(source):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((source, 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


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
