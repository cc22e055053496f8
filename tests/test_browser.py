"""A real browser (headless Chromium, driven over the DevTools protocol)
loads the demo site served by Bartizan: the stylesheet and the script come
from the static mount and take effect."""

import base64

import pytest

from tests.support.cdp import PageLoad
from tests.support.proxy import make_self_signed

WAIT = 30  # bound on every browser wait, in seconds


@pytest.fixture(scope="module")
def demo(module_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("browser-demo")
    return module_server(
        env={
            "BARTIZAN_DEMO_DB": str(base / "demo.sqlite3"),
            "BARTIZAN_DEMO_MEDIA": str(base / "media"),
        }
    )


def test_demo_page_styled_and_scripted(demo, browser, tmp_path):
    """Loading the demo home page in Chromium: every sub-request succeeds
    (no loading failures, every response status below 400), site.css and
    site.js come from /static with 200, the sheet is applied (#title is
    rgb(178, 34, 34)) and the script ran (body data-js="loaded")."""
    page = PageLoad(browser, demo.url + "/", demo.url, wait=WAIT)
    page.assert_all_served()
    for name, mime in (("site.css", "text/css"), ("site.js", "javascript")):
        url = f"{demo.url}/static/demo/{name}"
        assert url in page.responses, f"{url} was never loaded; responses: {sorted(page.responses)}"
        assert page.responses[url]["status"] == 200
        assert mime in page.responses[url]["mimeType"], page.responses[url]

    shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=page.session)
    path = tmp_path / "demo.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")

    title_color = "getComputedStyle(document.getElementById('title')).color"
    assert page.evaluate(title_color) == "rgb(178, 34, 34)"
    assert page.evaluate("document.body.dataset.js") == "loaded"


def test_demo_over_https_speaks_h2(server, browser, tmp_path):
    """Over HTTPS the browser picks HTTP/2 by ALPN, for the page and its static files."""
    cert, key = make_self_signed(str(tmp_path))
    srv = server(
        "--certfile",
        cert,
        "--keyfile",
        key,
        env={
            "BARTIZAN_DEMO_DB": str(tmp_path / "demo.sqlite3"),
            "BARTIZAN_DEMO_MEDIA": str(tmp_path / "media"),
        },
    )
    assert srv.url.startswith("https://")
    # The certificate is one this test made: the browser is told to take it.
    browser.call("Security.setIgnoreCertificateErrors", {"ignore": True})
    page = PageLoad(browser, srv.url + "/", srv.url, wait=WAIT)
    page.assert_all_served()
    navigation = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
    assert page.evaluate(navigation) == "h2"
    sheet = "performance.getEntriesByType('resource').find(e => e.name.endsWith('site.css'))"
    assert page.evaluate(f"{sheet}.nextHopProtocol") == "h2"
    assert page.evaluate("document.body.dataset.js") == "loaded"
