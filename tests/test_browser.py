"""A real browser (headless Chromium, driven over the DevTools protocol)
loads the demo site served by Bartizan: the stylesheet and the script come
from the static mount and take effect."""

import base64
import re
import shutil
import time

import pytest

from tests.support import ChildProcess
from tests.support.cdp import CDP

WAIT = 30  # bound on every browser wait, in seconds
DEVTOOLS_RE = re.compile(r"DevTools listening on (ws://\S+)")

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def demo(module_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("browser-demo")
    return module_server(
        env={
            "BARTIZAN_DEMO_DB": str(base / "demo.sqlite3"),
            "BARTIZAN_DEMO_MEDIA": str(base / "media"),
        }
    )


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium in its own process group; yields a CDP connection to
    the browser target. The DevTools address is read from stderr."""
    if CHROMIUM is None:
        pytest.skip(
            "no `chromium` on PATH (install Debian's chromium package to run the browser test)"
        )
    profile = tmp_path / "profile"
    profile.mkdir()
    proc = ChildProcess(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--no-proxy-server",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
    )
    cdp = None
    try:
        m = proc.stderr_match(DEVTOOLS_RE, WAIT)
        assert m, "chromium did not report a DevTools address; stderr:\n" + "\n".join(
            proc.stderr_lines()[-30:]
        )
        cdp = CDP(m.group(1), timeout=WAIT)
        yield cdp
    finally:
        if cdp:
            cdp.close()
        proc.stop()


def test_demo_page_styled_and_scripted(demo, browser, tmp_path):
    """Loading the demo home page in Chromium: every sub-request succeeds
    (no loading failures, every response status below 400), site.css and
    site.js come from /static with 200, the sheet is applied (#title is
    rgb(178, 34, 34)) and the script ran (body data-js="loaded")."""
    cdp = browser
    target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    cdp.call("Network.enable", session=session)
    cdp.call("Network.setCacheDisabled", {"cacheDisabled": True}, session=session)
    cdp.call("Page.enable", session=session)
    cdp.call("Runtime.enable", session=session)

    t0 = time.monotonic()
    nav = cdp.call("Page.navigate", {"url": demo.url + "/"}, session=session)
    assert not nav.get("errorText"), f"navigation failed: {nav}"
    cdp.wait_event("Page.loadEventFired", session=session, timeout=WAIT)
    # Late events (a response body finishing after load) have a moment to arrive.
    cdp.drain(0.5)

    # The browser's own favicon lookup is not a request of the page (the demo
    # links no icon), so it is left out; every request the page made counts.
    favicon = demo.url + "/favicon.ico"
    events = [(m, p) for m, p, sid in cdp.events if sid == session]
    sent = {
        p["requestId"]: p["request"]["url"] for m, p in events if m == "Network.requestWillBeSent"
    }
    page_ids = {rid for rid, url in sent.items() if url != favicon}
    failed = [p for m, p in events if m == "Network.loadingFailed" and p["requestId"] in page_ids]
    responses = {
        p["response"]["url"]: p["response"]
        for m, p in events
        if m == "Network.responseReceived" and p["requestId"] in page_ids
    }
    assert not failed, f"failed sub-requests: {failed}"
    unanswered = sorted(sent[rid] for rid in page_ids if sent[rid] not in responses)
    assert not unanswered, f"requests without a response: {unanswered}"
    bad = {url: r["status"] for url, r in responses.items() if r["status"] >= 400}
    assert not bad, f"responses with an error status: {bad}"
    for name, mime in (("site.css", "text/css"), ("site.js", "javascript")):
        url = f"{demo.url}/static/demo/{name}"
        assert url in responses, f"{url} was never loaded; responses: {sorted(responses)}"
        assert responses[url]["status"] == 200
        assert mime in responses[url]["mimeType"], responses[url]

    def evaluate(expr):
        res = cdp.call(
            "Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session
        )
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)
    path = tmp_path / "demo.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path} (page loaded in {time.monotonic() - t0:.2f}s)")

    assert (
        evaluate("getComputedStyle(document.getElementById('title')).color") == "rgb(178, 34, 34)"
    )
    assert evaluate("document.body.dataset.js") == "loaded"
