"""The bundled demo Django site, served when no MODULE:ATTR is given: a real
framework app end to end (templates, sessions of cookies, CSRF, forms,
redirects, 404 handling) through the server."""

import re
import uuid

import pytest
import requests

TIMEOUT = 10


@pytest.fixture(scope="module")
def demo(module_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    return module_server(env={"BARTIZAN_DEMO_DB": str(db)})


def csrf_form(session, url):
    """GET the notes page: returns the hidden form token (the csrftoken
    cookie is kept by the session)."""
    r = session.get(url, timeout=TIMEOUT)
    assert r.status_code == 200
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text)
    assert m, "no csrfmiddlewaretoken in the notes form"
    assert session.cookies.get("csrftoken"), "no csrftoken cookie set"
    return m.group(1)


def test_index(demo):
    """The site root renders an HTML page."""
    r = requests.get(demo.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "<html" in r.text.lower()


def test_notes_page(demo):
    r = requests.get(demo.url + "/notes/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert 'id="notes"' in r.text


def test_post_note_with_csrf_then_listed(demo):
    """A form POST with the CSRF cookie, the hidden token and a same-origin
    Origin/Referer passes Django's CSRF check, redirects (post/redirect/get)
    and the note is then listed. Exercises cookies, urlencoded bodies and
    the Host header reaching Django intact."""
    s = requests.Session()
    notes_url = demo.url + "/notes/"
    token = csrf_form(s, notes_url)
    text = f"note {uuid.uuid4().hex}"
    r = s.post(
        notes_url,
        data={"text": text, "csrfmiddlewaretoken": token},
        headers={"Referer": notes_url, "Origin": demo.url},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert r.status_code == 302, r.text[:500]
    assert r.headers["Location"].endswith("/notes/")
    listing = s.get(notes_url, timeout=TIMEOUT)
    assert listing.status_code == 200
    assert text in listing.text


def test_post_without_token_is_forbidden(demo):
    """Django's CSRF protection rejects a POST without the token: 403."""
    r = requests.post(
        demo.url + "/notes/",
        data={"text": "no token"},
        headers={"Origin": demo.url, "Referer": demo.url + "/notes/"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert r.status_code == 403


def test_post_with_cookie_but_wrong_token_is_forbidden(demo):
    s = requests.Session()
    csrf_form(s, demo.url + "/notes/")
    r = s.post(
        demo.url + "/notes/",
        data={"text": "bad token", "csrfmiddlewaretoken": "x" * 64},
        headers={"Origin": demo.url, "Referer": demo.url + "/notes/"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert r.status_code == 403


def test_missing_page_is_404(demo):
    r = requests.get(demo.url + "/does-not-exist", timeout=TIMEOUT)
    assert r.status_code == 404
    assert "Page not found" in r.text


def test_echo_view_sees_request(demo):
    """Django's view of the request: method, path, query, client address and
    the full body of a POST."""
    r = requests.post(demo.url + "/echo/?a=1&a=2&b=x%20y", data=b"z" * 5000, timeout=TIMEOUT)
    assert r.status_code == 200
    data = r.json()
    assert data["method"] == "POST"
    assert data["path"] == "/echo/"
    assert data["script_name"] == ""
    assert data["query"] == {"a": ["1", "2"], "b": ["x y"]}
    assert data["remote_addr"] == "127.0.0.1"
    assert data["scheme"] == "http"
    assert data["host"] == f"127.0.0.1:{demo.port}"
    assert data["body_length"] == 5000


def test_demo_under_root_path(server, tmp_path):
    """With --root-path, Django builds URLs under the prefix (SCRIPT_NAME)
    and routes on PATH_INFO."""
    srv = server("--root-path", "/site", env={"BARTIZAN_DEMO_DB": str(tmp_path / "demo.sqlite3")})
    r = requests.get(srv.url + "/site/echo/?q=1", timeout=TIMEOUT)
    assert r.status_code == 200
    data = r.json()
    assert data["script_name"] == "/site"
    assert data["path_info"] == "/echo/"
    assert data["path"] == "/site/echo/"
    notes = requests.get(srv.url + "/site/notes/", timeout=TIMEOUT)
    assert notes.status_code == 200
    assert 'action="/site/notes/"' in notes.text
    assert requests.get(srv.url + "/notes/", timeout=TIMEOUT).status_code == 404
