"""Where the server listens beyond TCP ports: unix sockets (--bind unix:/path) for the CLI,
the proxy front and the embedding API, made reachable and removed at stop; sockets handed
over by systemd's socket activation (LISTEN_FDS, LISTEN_PID) and by --fd."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import sys

import bartizan

from tests.support import ChildProcess, raw_request, wait_line
from tests.support.apps import LIFECYCLE
from tests.support.raw import RawConnection

UNIX_START_RE = re.compile(r"^bartizan: (proxy )?listening on unix:(?P<path>\S+?)[, ]")


def unix_get(path, target="/hello"):
    """One GET over the unix socket at `path`: (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n" % target.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_unix_socket_answers_and_is_removed_at_stop(server, tmp_path):
    path = str(tmp_path / "app.sock")
    srv = server(LIFECYCLE, "--bind", f"unix:{path}", "--workers", "2", wait=False)
    assert wait_line(srv, UNIX_START_RE, 30).group("path") == path
    assert unix_get(path) == (200, b"hello\n")
    # Reachable by the user nginx runs as: the directory it is in decides who gets there.
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(30) == 0
    assert not os.path.exists(path)


def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(server, tmp_path):
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, as after a crash
    first = server(LIFECYCLE, "--bind", f"unix:{path}", wait=False)
    wait_line(first, UNIX_START_RE, 30)
    second = server(LIFECYCLE, "--bind", f"unix:{path}", wait=False)
    assert second.wait_exit(30) == 2
    assert "address already in use" in second.stderr_text().lower()
    assert unix_get(path) == (200, b"hello\n")


def test_the_proxy_front_on_a_unix_socket(server, tmp_path):
    app = server(LIFECYCLE)
    path = str(tmp_path / "front.sock")
    proxy = server(
        "proxy", "--bind", f"unix:{path}", "--upstream", f"127.0.0.1:{app.port}", wait=False
    )
    wait_line(proxy, UNIX_START_RE, 30)
    assert unix_get(path) == (200, b"hello\n")
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit(30) == 0
    assert not os.path.exists(path)


def test_an_embedded_server_on_a_unix_socket(tmp_path):
    def app(environ, start_response):
        peer = environ["REMOTE_ADDR"].encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(peer)))]
        )
        return [peer]

    path = str(tmp_path / "embedded.sock")
    with bartizan.Server(app, bind=[f"unix:{path}"]) as s:
        assert s.unix_paths == [path]
        assert s.urls == [f"unix:{path}"]
        # The peer is on this machine.
        assert unix_get(path) == (200, b"127.0.0.1")
    assert not os.path.exists(path)


def listening_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_systemd_socket_activation(tmp_path):
    """As systemd starts a service of a socket unit: the socket is descriptor 3, LISTEN_FDS=1,
    LISTEN_PID the service's own pid. The server binds nothing (the start line names that
    socket alone, not the default port) and serves on it with two workers."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    argv = ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", sys.executable, "-m", "bartizan"]
    argv += [LIFECYCLE, "--workers", "2"]
    proc = ChildProcess(argv, env={"LISTEN_FDS": "1"}, fd3=sock.fileno())
    try:
        wait_line(proc, re.compile(rf"^bartizan: listening on http://127\.0\.0\.1:{port} \("), 30)
        for _ in range(4):
            assert raw_request(port, "GET", "/hello").body == b"hello\n"
    finally:
        proc.stop()
        sock.close()


def test_socket_activation_meant_for_another_process_is_ignored(server):
    """LISTEN_PID names another process (the variables leaked from a parent): the server
    binds as asked instead."""
    srv = server(LIFECYCLE, env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert raw_request(srv.port, "GET", "/hello").body == b"hello\n"


def test_fd_serves_an_inherited_socket_for_the_proxy_too(tmp_path):
    """--fd N, for supervisors other than systemd: the app server and the proxy front each
    serve on the socket they were handed."""
    app_sock, front_sock = listening_socket(), listening_socket()
    app_port, front_port = app_sock.getsockname()[1], front_sock.getsockname()[1]
    app = ChildProcess(
        [sys.executable, "-m", "bartizan", LIFECYCLE, "--fd", "3"], fd3=app_sock.fileno()
    )
    front = ChildProcess(
        [
            sys.executable,
            "-m",
            "bartizan",
            "proxy",
            "--fd",
            "3",
            "--upstream",
            f"127.0.0.1:{app_port}",
        ],
        fd3=front_sock.fileno(),
    )
    try:
        wait_line(app, re.compile(r"^bartizan: listening on "), 30)
        wait_line(front, re.compile(r"^bartizan: proxy listening on "), 30)
        assert raw_request(front_port, "GET", "/hello").body == b"hello\n"
        with RawConnection(app_port) as c:
            assert c.request("GET", "/hello").body == b"hello\n"
    finally:
        app.stop()
        front.stop()
        app_sock.close()
        front_sock.close()


def test_fd_that_is_not_a_listening_socket_is_a_user_error(server, tmp_path):
    srv = server(LIFECYCLE, "--fd", "0", wait=False)
    assert srv.wait_exit(30) == 2
    assert "--fd 0" in srv.stderr_text()
