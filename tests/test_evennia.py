"""An Evennia game (Evennia from PyPI, a fresh `evennia --init` game) with the two settings
lines serves its website through Bartizan: the pages, the admin login, the AJAX webclient in
the Portal, static files, client addresses, a real browser, reloads under load, the Server
away, and `evennia stop`.

The tests share one game and run in file order: the last ones take its Server, then the whole
game, down.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import uuid

import pytest

pytest.importorskip("evennia")

from tests.support.cdp import PageLoad
from tests.support.evennia_game import (
    OFFLINE_TEMPLATES,
    PAGES,
    SUBPROTOCOL,
    SUPERUSER,
    Ask,
    Clients,
    Game,
    evennia_6,
    logged_in,
    play_in_browser,
    say,
    until,
    websocket,
)

# How long the Portal's proxy holds a request while the Server is away: longer than a reload
# takes here (5-8 s), short enough for the Server-away test to see the 503.
UPSTREAM_WAIT = 20
EXTRA_SETTINGS = f"""
UPSTREAM_IPS = ["127.0.0.1"]
BARTIZAN_PORTAL = {{"upstream_wait": {UPSTREAM_WAIT}}}
"""


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = _has_ipv6_loopback()

# Twisted children a game's WEB_PLUGINS_MODULE adds to the Server's and the Portal's roots.
WEB_PLUGINS = """
from twisted.web import static


def at_webserver_root_creation(web_root):
    web_root.putChild(b"server-plugin", static.Data(b"from the Server's plugin", "text/plain"))
    return web_root


def at_webproxy_root_creation(web_root):
    web_root.putChild(b"portal-plugin", static.Data(b"from the Portal's plugin", "text/plain"))
    return web_root
"""


@pytest.fixture(scope="module")
def game(tmp_path_factory):
    g = Game(tmp_path_factory.mktemp("evennia"), bartizan=True)
    if IPV6:
        g.settings["WEBSERVER_INTERFACES"] = ["127.0.0.1", "::1"]
    try:
        g.create(EXTRA_SETTINGS, web_plugins=WEB_PLUGINS, templates=OFFLINE_TEMPLATES).start()
        yield g
    finally:
        g.stop()


def test_front_page_names_the_game(game):
    status, body, _ = game.get("/")
    assert status == 200
    assert game.name.encode() in body
    assert len(body) > 3000


@pytest.mark.skipif(not IPV6, reason="this machine has no IPv6 loopback")
def test_front_page_over_ipv6(game):
    """WEBSERVER_INTERFACES with ::1: the public port answers there too."""
    c = http.client.HTTPConnection("::1", game.port, timeout=30)
    try:
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 200
        assert game.name.encode() in r.read()
    finally:
        c.close()


def test_admin_redirects_to_login(game):
    status, _, r = game.get("/admin/")
    assert status == 302
    assert r.getheader("Location") == "/admin/login/?next=/admin/"


def _cookies(response) -> dict:
    jar = {}
    for value in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = value.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return jar


def test_admin_login_with_csrf(game):
    """GET the login form (a CSRF cookie and token), POST the superuser's credentials, then
    /admin/ with the session cookie is the admin index."""
    status, body, r = game.get("/admin/login/?next=/admin/")
    assert status == 200
    jar = _cookies(r)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    form = f"csrfmiddlewaretoken={token}&username={SUPERUSER[0]}&password={SUPERUSER[1]}"
    form += "&next=/admin/"
    c = http.client.HTTPConnection("127.0.0.1", game.port, timeout=30)
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    c.request(
        "POST",
        "/admin/login/?next=/admin/",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": cookie,
            "Referer": f"http://127.0.0.1:{game.port}/admin/login/",
        },
    )
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status == 302, r.status
    assert r.getheader("Location") == "/admin/"
    jar.update(_cookies(r))
    assert "sessionid" in jar
    status, body, _ = game.get("/admin/", {"Cookie": f"sessionid={jar['sessionid']}"})
    assert status == 200
    assert b"Site administration" in body or b"Evennia" in body


def test_webclient_page(game):
    status, body, _ = game.get("/webclient/")
    assert status == 200
    assert b"wsurl" in body


def _ajax(game, form: dict) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", game.port, timeout=70)
    try:
        body = "&".join(f"{k}={v}" for k, v in form.items())
        c.request(
            "POST",
            "/webclientdata",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_ajax_webclient_lives_in_the_portal(game):
    """/webclientdata is the Portal's own Twisted long-poll resource, reached through the
    proxy's route: init answers JSON with the session id, receive the welcome screen."""
    sid, cuid = uuid.uuid4().hex, uuid.uuid4().hex
    status, body = _ajax(game, {"mode": "init", "csessid": sid, "cuid": cuid, "browserstr": "t"})
    assert status == 200
    assert json.loads(body)["csessid"] == sid
    status, body = _ajax(game, {"mode": "receive", "csessid": sid, "cuid": cuid})
    assert status == 200
    kind, args, _ = json.loads(body)
    assert kind == "text"
    assert game.name in args[0]


def test_web_plugin_children_are_served(game):
    """What at_webserver_root_creation and at_webproxy_root_creation add to their roots
    answers at its path, from the process that added it."""
    assert game.get("/server-plugin")[:2] == (200, b"from the Server's plugin")
    assert game.get("/portal-plugin")[:2] == (200, b"from the Portal's plugin")


def test_static_file_with_etag_and_304(game):
    path = "/static/website/css/website.css"
    status, body, r = game.get(path)
    assert status == 200
    assert b"Evennia" in body
    assert r.getheader("Content-Type").startswith("text/css")
    etag = r.getheader("ETag")
    assert etag
    status, body, _ = game.get(path, {"If-None-Match": etag})
    assert status == 304
    assert body == b""


def test_static_root_lists_nothing(game):
    for path in ("/static/", "/static/website/", "/static/website/css/"):
        status, body, _ = game.get(path)
        assert status in (403, 404), (path, status)
        assert b"website.css" not in body and b"css" not in body.lower().replace(b"text/", b"")


def _client_seen(game, source: str, forwarded: str | None) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", game.port, timeout=30, source_address=(source, 0))
    try:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        c.request("GET", "/_client/", headers=headers)
        r = c.getresponse()
        assert r.status == 200
        return json.loads(r.read())
    finally:
        c.close()


def test_forwarded_for_believed_from_a_trusted_peer_only(game):
    """127.0.0.1 is in UPSTREAM_IPS: the address it forwards for is the client Django sees.
    127.0.0.2 is not: what it claims is dropped and Django sees 127.0.0.2 itself."""
    seen = _client_seen(game, "127.0.0.1", "203.0.113.7")
    assert seen == {"remote_addr": "203.0.113.7", "evennia_ip": "203.0.113.7"}
    seen = _client_seen(game, "127.0.0.2", "203.0.113.7")
    assert seen == {"remote_addr": "127.0.0.2", "evennia_ip": "127.0.0.2"}


def test_browser_loads_front_page_and_webclient(game, browser):
    origin = f"http://127.0.0.1:{game.port}"
    for path, must in (
        ("/", ["/static/website/css/website.css"]),
        ("/webclient/", ["/static/webclient/css/webclient.css", "/static/webclient/js/evennia.js"]),
    ):
        # Other origins (CDNs) are blocked: this machine may have no network.
        page = PageLoad(browser, origin + path, origin, block=["https://*"])
        page.assert_all_served()
        for sub in must:
            assert origin + sub in page.responses, (sub, sorted(page.responses))
            assert page.responses[origin + sub]["status"] == 200
        assert game.name in page.evaluate("document.title + document.body.innerText")


def test_webclient_page_points_its_websocket_at_its_own_port(game):
    status, body, _ = game.get("/webclient/")
    assert status == 200
    assert f'var wsurl = "ws://127.0.0.1:{game.port}/ws";' in body.decode(), body[-3000:]


def test_the_websocket_on_the_public_port(game):
    """`/ws` of the public port is the Portal's websocket: the subprotocol is agreed through
    the proxy, the game talks, and the Portal sees the client's own address."""
    ws = websocket(game.port, source="127.0.0.2")
    try:
        if evennia_6():
            assert ws.headers.get("sec-websocket-protocol") == SUBPROTOCOL, ws.headers
        logged_in(ws)
        say(ws, "who")
        assert "127.0.0.2" in until(ws, "127.0.0.2")
    finally:
        ws.close()
    # The websocket port itself still serves clients that use it.
    direct = websocket(game.websocket_port, path="/")
    try:
        until(direct, "connect")
    finally:
        direct.close()


def test_websocket_sessions_survive_a_reload(game):
    """A logged-in player and two visitors at the connection screen, all on `/ws`: after
    `evennia reload` each of their sockets still answers (one session per account is
    Evennia's default, so one player)."""
    player = websocket(game.port)
    visitors = [websocket(game.port) for _ in range(2)]
    try:
        logged_in(player)
        for ws in visitors:
            until(ws, "connect")
        pid = game.server_pid()
        game.reload()
        game.wait_for_new_server(pid)
        game.wait_until_serving()
        say(player, "look")
        assert "Limbo" in until(player, "Limbo", timeout=60)
        for ws in visitors:
            say(ws, "look")
            assert "connect" in until(ws, "connect", timeout=60)
    finally:
        for ws in (player, *visitors):
            ws.close()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_portal_answers_while_the_new_server_starts(game):
    """While `evennia reload` starts the new Server (its process there, its port not yet
    open), a websocket ping on `/ws` is answered: the Portal's reactor is not held by the
    launch."""
    ws = websocket(game.port)
    old = game.server_pid()
    answered_while_starting = 0
    reload = threading.Thread(target=game.reload)
    try:
        until(ws, "connect")
        reload.start()
        while reload.is_alive():
            ws.ping(time.monotonic() + 30)
            pid = game.server_pid()
            if pid not in (None, old) and _refused(game.internal_port):
                answered_while_starting += 1
            time.sleep(0.02)
        game.wait_until_serving()
    finally:
        reload.join(timeout=120)
        ws.close()
    assert answered_while_starting > 0


def test_browser_plays_through_the_public_port(game, browser):
    """The webclient page in Chromium, with the websocket port blocked: its client connects
    at `/ws`, logs in, and the room's text arrives. (The page's layout libraries come from
    CDNs this machine may not reach, so the text is read from the client's own event
    stream rather than from the layout.)"""
    origin = f"http://127.0.0.1:{game.port}"
    blocked = ["https://*", f"*:{game.websocket_port}*"]
    page = PageLoad(browser, origin + "/webclient/", origin, block=blocked)
    assert page.evaluate("window.wsurl") == f"ws://127.0.0.1:{game.port}/ws"
    play_in_browser(page)


# The pages, and the login form posted without a CSRF token: Django refuses it with 403.
LOAD = [*PAGES, Ask("POST", "/auth/login/", 403, "username=nobody&password=wrong")]


def _telnet_reload(game):
    """The in-game `reload` command, typed by the superuser over telnet."""
    port = game.settings["TELNET_PORTS"][0]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.settimeout(30)

        def readuntil(text: bytes):
            seen = b""
            while text not in seen:
                chunk = s.recv(65536)
                assert chunk, f"telnet closed before {text!r}: {seen[-300:]!r}"
                seen += chunk

        readuntil(b"connect")
        s.sendall(f"connect {SUPERUSER[0]} {SUPERUSER[1]}\r\n".encode())
        readuntil(b"Limbo")
        s.sendall(b"reload\r\n")
        readuntil(b"restart")


def test_reloads_under_load_lose_nothing(game):
    """Three `evennia reload`s and one in-game `reload` while 12 clients keep asking: every
    answer is the right status with a body (none failed, none empty), and each reload really
    replaced the Server process."""
    pids = [game.server_pid()]
    with Clients(game.port, LOAD) as load:
        time.sleep(2)
        for _ in range(3):
            game.reload()
            pids.append(game.wait_for_new_server(pids[-1]))
            time.sleep(1)
        _telnet_reload(game)
        pids.append(game.wait_for_new_server(pids[-1]))
        game.wait_until_serving()
        time.sleep(2)
    assert len(set(pids)) == 5, pids
    assert load.counts["ok"] > 200, load.counts
    assert not load.bad, f"{len(load.bad)} bad answers, first: {load.bad[:10]}"


def test_server_away_gives_503_then_back(game):
    """`evennia sstop`: after the proxy's wait, 503 with Retry-After and a short page (not
    Evennia's 501); `evennia start` brings the Server back behind the same public port."""
    game.evennia("sstop")
    status, body, r = game.get("/")
    assert status == 503
    assert r.getheader("Retry-After")
    assert body.startswith(b"503 Service Unavailable")
    game.evennia("start")
    game.wait_until_serving()


def test_stop_leaves_nothing(game):
    pids = game.pids()
    assert len(pids) == 2, pids
    game.evennia("stop", timeout=60)
    deadline = time.monotonic() + 30
    while game.pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not game.pids(), "a game process outlived `evennia stop`"
    for port in game.ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"
