"""A whole Evennia game over HTTPS on its one public port, with a certificate of its own from
a real ACME CA (pebble): `BARTIZAN_PORTAL` carries the HTTPS options, and the pages, static
files, webclient page and its websocket (`wss` at `/ws`) are all served over TLS; port "80"
(a redirect listener) answers the CA's http-01 check and sends browsers to HTTPS."""

from __future__ import annotations

import ssl
import subprocess

import pytest

pytest.importorskip("evennia")

from tests.support import evennia_game
from tests.support.acme import Pebble, redirect_of
from tests.support.cdp import PageLoad
from tests.support.process import free_port

NAME = "game.test"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    base = tmp_path_factory.mktemp("evennia-https")
    game = evennia_game.Game(base, bartizan=True, name="securegame")
    redirect_port = free_port()
    ca = Pebble(base / "pebble", redirect_port, game.port)
    roots = base / "roots.pem"
    roots.write_text(ca.roots())
    trust = ssl.create_default_context(cafile=str(roots))
    # The game is asked at 127.0.0.1; the chain is still checked against pebble's root.
    trust.check_hostname = False
    game.tls = trust
    portal = {
        "https": [NAME],
        "acme_directory": ca.url,
        "acme_ca": str(ca.ca),
        "state_dir": str(base / "state"),
        "http_redirect": [f"127.0.0.1:{redirect_port}"],
    }
    extra = f'UPSTREAM_IPS = ["127.0.0.1"]\nBARTIZAN_PORTAL = {portal!r}\n'
    try:
        game.create(extra, templates=evennia_game.OFFLINE_TEMPLATES).start()
        yield game, roots, redirect_port
    finally:
        game.stop()
        ca.stop()


def curl(roots, port, path, *flags):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(roots),
         "--resolve", f"{NAME}:{port}:127.0.0.1", "-w", "\n%{http_version} %{http_code}",
         *flags, f"https://{NAME}:{port}{path}"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    body, _, tail = out.stdout.rpartition(b"\n")
    return body, tail.decode()


def test_pages_and_static_files_over_https_and_h2(secure):
    game, roots, _ = secure
    body, tail = curl(roots, game.port, "/", "--http2")
    assert tail == "2 200" and game.name.encode() in body
    css, tail = curl(roots, game.port, "/static/website/css/website.css", "--http2")
    assert tail == "2 200" and len(css) > 100
    page, tail = curl(roots, game.port, "/webclient/", "--http1.1")
    assert tail == "1.1 200"
    assert f'var wsurl = "wss://{NAME}:{game.port}/ws";' in page.decode()


def test_the_redirect_listener_sends_browsers_to_https(secure):
    game, _, redirect_port = secure
    answer = redirect_of(redirect_port, NAME, "/webclient/")
    assert answer == f"308 https://{NAME}:{game.port}/webclient/"


def test_the_websocket_over_wss(secure):
    game, _, _ = secure
    ws = evennia_game.websocket(game.port, tls=game.tls)
    try:
        evennia_game.logged_in(ws)
        evennia_game.say(ws, "look")
        assert "Limbo" in evennia_game.until(ws, "Limbo")
    finally:
        ws.close()


def test_browser_plays_over_https(secure, browser):
    game, _, _ = secure
    origin = f"https://127.0.0.1:{game.port}"
    # The certificate names game.test and chains to a root made for this run.
    browser.call("Security.setIgnoreCertificateErrors", {"ignore": True})
    blocked = ["https://*.com/*", "https://*.net/*", f"*:{game.websocket_port}*"]
    page = PageLoad(browser, origin + "/webclient/", origin, block=blocked)
    assert page.evaluate("window.wsurl") == f"wss://127.0.0.1:{game.port}/ws"
    assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
    evennia_game.play_in_browser(page)
