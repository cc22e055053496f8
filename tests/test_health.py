"""The health path (--health-path): answered from Rust without the app, 200 while the server
takes work, 503 from the moment it drains or is locked, so a load balancer stops sending; and
the proxy front's active checks of its upstreams (--upstream-health)."""

from __future__ import annotations

import re
import signal
import time

import bartizan

from tests.support import RawConnection, raw_request
from tests.support.process import wait_line
from tests.support.proxy import start_app, start_proxy, upstream_of

LIFECYCLE = "tests.apps.lifecycle:app"


def test_health_is_200_without_the_app(server):
    srv = server(LIFECYCLE, "--health-path", "/healthz")
    r = raw_request(srv.port, "GET", "/healthz")
    assert (r.status, r.body) == (200, b"200 OK\n")
    assert raw_request(srv.port, "GET", "/sleep?s=0").status == 200


def test_a_retiring_worker_answers_503_on_the_connections_it_still_serves(cli):
    """SIGHUP: the old worker drains. A health check on a connection it still holds gets 503
    with Retry-After (and the connection closes); a new connection reaches the new worker,
    which answers 200."""
    srv = cli(LIFECYCLE, "--health-path", "/healthz")
    probe = RawConnection(srv.port)
    try:
        probe.send(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        assert probe.read_response().status == 200
        srv.signal(signal.SIGHUP)
        wait_line(srv, re.compile(r"^bartizan: reloaded: "), 30)
        # The old worker is told to retire as that line is written, and drains once it has
        # read the signal: until then it still says 200.
        for _ in range(100):
            probe.send(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
            r = probe.read_response()
            if r.status != 200:
                break
            time.sleep(0.02)
        assert r.status == 503
        assert r.header("Retry-After")
        assert r.header("Connection") == "close"
    finally:
        probe.close()
    assert raw_request(srv.port, "GET", "/healthz").status == 200


def test_health_of_a_locked_embedded_server():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    with bartizan.Server(app, port=0, health_path="/up") as s:
        assert raw_request(s.port, "GET", "/up").status == 200
        s.lock()
        assert raw_request(s.port, "GET", "/up").status == 503
        s.unlock()
        assert raw_request(s.port, "GET", "/up").status == 200


def tags_served(port, n=20):
    return {raw_request(port, "GET", "/who").json()["tag"] for _ in range(n)}


def test_the_proxy_moves_traffic_off_an_upstream_whose_health_path_fails(server, tmp_path):
    """Two upstreams; --upstream-health /health every 0.2 s. While b's health path answers
    503 no request reaches it, and none fails; once it passes again it gets traffic back; and
    one that does not answer at all (stopped) is taken out too."""
    flag = tmp_path / "b-unhealthy"
    a = start_app(server, tag="a")
    b = start_app(server, tag="b", env={"PROXY_TEST_UNHEALTHY": str(flag)})
    proxy = start_proxy(
        server,
        [upstream_of(a), upstream_of(b)],
        "--upstream-health",
        "/health",
        "--upstream-health-interval",
        "0.2",
    )
    assert tags_served(proxy.port) == {"a", "b"}
    flag.write_text("")
    out = wait_line(
        proxy, re.compile(r"upstream \S+ failed its health check \(answered 503\): taken out"), 10
    )
    assert f":{b.port} " in out.string
    assert tags_served(proxy.port, 40) == {"a"}
    flag.unlink()
    wait_line(proxy, re.compile(r"passes its health check again: back in"), 10)
    assert tags_served(proxy.port) == {"a", "b"}
    b.stop()
    wait_line(proxy, re.compile(r"failed its health check \(no connection: .*\): taken out"), 10)
    assert tags_served(proxy.port, 40) == {"a"}
