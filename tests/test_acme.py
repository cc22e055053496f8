"""HTTPS that runs itself: certificates obtained over ACME from a real CA (pebble), served
over HTTP/2 and HTTP/1.1, kept across restarts with the CA gone, renewed under a running
client, and kept when the CA fails."""

import hashlib
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import time

import pytest

from tests.support.acme import Pebble, redirect_of
from tests.support.apps import ECHO
from tests.support.process import free_port
from tests.support.proxy import start_proxy, upstream_of

NAME = "app.test"


def curl(roots, port, *args, path="/"):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(roots),
         "--resolve", f"{NAME}:{port}:127.0.0.1", "-w", "\n%{http_version}", *args,
         f"https://{NAME}:{port}{path}"],
        capture_output=True, timeout=20,
    )  # fmt: skip
    body, _, version = out.stdout.rpartition(b"\n")
    return out.returncode, body, version.decode(), out.stderr.decode()


def served_certificate(port, roots):
    """The DER of the certificate a handshake for NAME gets, verified against `roots`."""
    ctx = ssl.create_default_context(cafile=str(roots))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=NAME) as tls:
            return tls.getpeercert(binary_form=True)


def wait_for_certificate(port, roots, timeout=60, other_than=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            der = served_certificate(port, roots)
            if der != other_than:
                return der
        except (OSError, ssl.SSLError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no new certificate for {NAME} on {port} within {timeout} s")
        time.sleep(0.3)


@pytest.fixture
def site(tmp_path):
    """Ports for the site, and a pebble that checks them."""

    class Site:
        tls_port = free_port()
        http_port = free_port()
        state = tmp_path / "state"
        roots = tmp_path / "roots.pem"

        def start_ca(self, **kw):
            self.ca = Pebble(tmp_path / f"pebble-{time.monotonic_ns()}", self.http_port,
                             self.tls_port, **kw)  # fmt: skip
            # Every pebble run has roots of its own: trust each one seen.
            with open(self.roots, "a") as f:
                f.write(self.ca.roots())
            return self.ca

        def args(self, *more, directory=None, bind=True):
            where = ["--bind", f"127.0.0.1:{self.tls_port}"] if bind else []
            return [
                *where, "--https", NAME,
                "--acme-directory", directory or self.ca.url, "--acme-ca", str(self.ca.ca),
                "--state-dir", str(self.state), *more,
            ]  # fmt: skip

    s = Site()
    yield s
    if hasattr(s, "ca"):
        s.ca.stop()


def test_a_certificate_is_obtained_and_served_over_h2_and_http11(server, site):
    site.start_ca()
    srv = server(ECHO, *site.args("--http-redirect", f"127.0.0.1:{site.http_port}", "--hsts", "60"))
    assert srv.url.startswith("https://")
    wait_for_certificate(site.tls_port, site.roots)
    rc, body, version, err = curl(site.roots, site.tls_port, "--http2", path="/hello?x=1")
    assert (rc, version) == (0, "2"), err
    env = json.loads(body)["environ"]
    assert env["wsgi.url_scheme"] == "https" and env["HTTP_HOST"] == f"{NAME}:{site.tls_port}"
    rc, body, version, err = curl(site.roots, site.tls_port, "--http1.1", "-i")
    assert (rc, version) == (0, "1.1"), err
    assert b"strict-transport-security: max-age=60" in body.lower()
    # The plain listener: everything but a check is sent to HTTPS.
    redirect = redirect_of(site.http_port, NAME, "/a/b?c=1")
    assert redirect == f"308 https://{NAME}:{site.tls_port}/a/b?c=1"
    assert srv.stderr_match(re.compile(r"obtained a certificate for app\.test"), timeout=5)
    # Private files in a private directory.
    for path in (site.state / "certificates" / NAME).iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(site.state / "certificates").st_mode) == 0o700


def test_tls_alpn_01_alone_and_a_restart_with_the_ca_gone(server, site):
    """Without a redirect listener the check is tls-alpn-01 on the TLS port itself; a restart
    serves the stored certificate at once, with the CA stopped."""
    ca = site.start_ca()
    first = server(ECHO, *site.args())
    obtained = wait_for_certificate(site.tls_port, site.roots)
    first.stop()
    ca.stop()
    again = server(ECHO, *site.args())
    assert served_certificate(site.tls_port, site.roots) == obtained
    rc, _, version, err = curl(site.roots, site.tls_port, "--http2")
    assert (rc, version) == (0, "2"), err
    assert again.stderr_match(re.compile(r"no certificate .* yet"), timeout=1) is None


def test_renewal_swaps_the_certificate_under_a_running_client(server, site):
    site.start_ca()
    first = server(ECHO, *site.args())
    old = wait_for_certificate(site.tls_port, site.roots)
    first.stop()
    srv = server(ECHO, *site.args("--acme-renew-at", "0"))
    ctx = ssl.create_default_context(cafile=str(site.roots))
    raw = socket.create_connection(("127.0.0.1", site.tls_port), timeout=10)
    held = ctx.wrap_socket(raw, server_hostname=NAME)
    assert held.getpeercert(binary_form=True) == old
    new = wait_for_certificate(site.tls_port, site.roots, other_than=old)
    assert new != old
    # The connection opened before the swap goes on with its certificate.
    held.sendall(f"GET /after HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
    answer = b""
    while chunk := held.recv(65536):
        answer += chunk
    held.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert srv.stderr_match(re.compile(r"obtained a certificate for app\.test"), timeout=5)


def test_a_refusing_ca_is_logged_and_the_old_certificate_kept(server, site):
    site.start_ca()
    first = server(ECHO, *site.args())
    old = wait_for_certificate(site.tls_port, site.roots)
    first.stop()
    site.ca.stop()
    # A CA that refuses the name: its problem document is in the log line.
    site.start_ca(blocked=[NAME])
    srv = server(ECHO, *site.args("--acme-renew-at", "0"))
    line = srv.stderr_match(re.compile(r"could not obtain a certificate for app\.test"), timeout=30)
    assert line is not None, srv.stderr_text()
    assert "rejectedIdentifier" in line.string and "the last one is kept" in line.string
    assert served_certificate(site.tls_port, site.roots) == old
    srv.stop()
    # A CA that cannot be reached at all.
    gone = f"https://127.0.0.1:{free_port()}/dir"
    srv = server(ECHO, *site.args("--acme-renew-at", "0", directory=gone))
    line = srv.stderr_match(re.compile(r"could not obtain a certificate for app\.test"), timeout=30)
    assert line is not None and "the last one is kept" in line.string
    assert served_certificate(site.tls_port, site.roots) == old


def test_no_certificate_yet_fails_handshakes_at_once(server, site, tmp_path):
    site.ca = type("None", (), {"url": "", "ca": tmp_path / "none.pem", "stop": lambda s: None})()
    site.ca.ca.write_text("")
    gone = f"https://127.0.0.1:{free_port()}/dir"
    srv = server(ECHO, *site.args(directory=gone))
    assert srv.stderr_match(re.compile(r"no certificate for app\.test yet"), timeout=10)
    anything = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anything.check_hostname, anything.verify_mode = False, ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", site.tls_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            anything.wrap_socket(raw, server_hostname=NAME)
    assert time.monotonic() - started < 5


def test_the_proxy_front_gets_its_certificate_too(server, site):
    site.start_ca()
    app = server(ECHO)
    proxy = start_proxy(
        server, [upstream_of(app)], *site.args(bind=False), bind=f"127.0.0.1:{site.tls_port}"
    )
    assert proxy.url.startswith("https://")
    wait_for_certificate(site.tls_port, site.roots)
    rc, body, version, err = curl(site.roots, site.tls_port, "--http2", path="/through")
    assert (rc, version) == (0, "2"), err
    assert json.loads(body)["environ"]["PATH_INFO"] == "/through"


def test_a_state_dir_that_cannot_be_written_is_a_user_error(server, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    rc, err = server(
        ECHO, "--https", NAME, "--state-dir", str(blocked / "state"), wait=False
    ).outcome()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--state-dir" in lines[0] and "cannot be written" in lines[0], err


def test_state_dir_holds_the_account(server, site):
    site.start_ca()
    server(ECHO, *site.args())
    wait_for_certificate(site.tls_port, site.roots)
    accounts = list((site.state / "accounts").rglob("account.json"))
    assert len(accounts) == 1
    assert stat.S_IMODE(os.stat(accounts[0]).st_mode) == 0o600
    assert "key_pkcs8" in accounts[0].read_text()
    assert hashlib.sha256(accounts[0].read_bytes()).hexdigest()
