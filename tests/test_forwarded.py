"""Trusted proxy headers on the app server: X-Forwarded-For/-Proto/-Host/-Port
and RFC 7239 `Forwarded`.

The rules under test:
- Only a peer in the trust list (`--trusted-proxies`, default
  "127.0.0.1,::1"; "" trusts nobody, "*" everybody) may change REMOTE_ADDR,
  wsgi.url_scheme, HTTP_HOST/SERVER_NAME or SERVER_PORT.
- The client is the rightmost chain entry that is not itself trusted; if
  every entry is trusted, the leftmost.
- `Forwarded` wins over X-Forwarded-* and its proto/host come from the same
  element as the chosen client.
- A malformed value is ignored, never an error.

The tests connect from 127.0.0.1 (or ::1), so "trusted peer" and "untrusted
peer" are set up by choosing the server's trust list. The echo app answers
with the environ it got.
"""

import pytest

from tests.support import have_ipv6_loopback, raw_request
from tests.support.apps import ECHO


@pytest.fixture(scope="module")
def default_trust(module_server):
    """Default trust list: 127.0.0.1 and ::1."""
    return module_server(ECHO, "--threads", "4")


@pytest.fixture(scope="module")
def cidr_trust(module_server):
    """Loopback plus a private IPv4 network and an IPv6 documentation prefix."""
    return module_server(
        ECHO, "--threads", "4", "--trusted-proxies", "127.0.0.1,10.0.0.0/8,2001:db8::/32"
    )


@pytest.fixture(scope="module")
def trust_all(module_server):
    return module_server(ECHO, "--threads", "4", "--trusted-proxies", "*")


@pytest.fixture(scope="module")
def untrusting(module_server):
    """One server per trust list, started on first use."""
    started = {}

    def get(trust):
        if trust not in started:
            started[trust] = module_server(ECHO, "--threads", "2", "--trusted-proxies", trust)
        return started[trust]

    return get


def fetch(srv, headers=(), target="/", host=None):
    """GET through a fresh connection; returns (response, environ)."""
    hdrs = list(headers)
    if host is not None:
        hdrs.append(("Host", host))
    r = raw_request(srv.port, "GET", target, hdrs, host=srv.host)
    assert r.status == 200, f"expected 200 for headers {headers!r}, got {r!r}"
    return r, r.json()["environ"]


# --- from a trusted peer ---------------------------------------------------------

TRUSTED_CASES = [
    # (id, headers, expected environ entries, rule)
    (
        "xff-single",
        [("X-Forwarded-For", "1.2.3.4")],
        {"REMOTE_ADDR": "1.2.3.4"},
        "a trusted peer's X-Forwarded-For names the client",
    ),
    (
        "xff-rightmost-untrusted",
        [("X-Forwarded-For", "6.6.6.6, 1.2.3.4")],
        {"REMOTE_ADDR": "1.2.3.4"},
        "the chain is read from the right: the rightmost untrusted entry is the client, earlier entries are the client's own claims",
    ),
    (
        "xff-skips-trusted-hops",
        [("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 127.0.0.1, ::1")],
        {"REMOTE_ADDR": "1.2.3.4"},
        "entries that are themselves trusted proxies are skipped",
    ),
    (
        "xff-all-trusted-leftmost",
        [("X-Forwarded-For", "::1, 127.0.0.1")],
        {"REMOTE_ADDR": "::1"},
        "if every entry is trusted, the leftmost is used",
    ),
    (
        "xff-ipv6",
        [("X-Forwarded-For", "2001:db8::1")],
        {"REMOTE_ADDR": "2001:db8::1"},
        "IPv6 entries are accepted",
    ),
    (
        "xff-ipv6-bracket-port",
        [("X-Forwarded-For", "[2001:db8::2]:443")],
        {"REMOTE_ADDR": "2001:db8::2"},
        "an entry may be [v6]:port; REMOTE_ADDR is the bare address",
    ),
    (
        "xff-ipv4-port",
        [("X-Forwarded-For", "1.2.3.4:5678")],
        {"REMOTE_ADDR": "1.2.3.4"},
        "an entry may be v4:port; REMOTE_ADDR is the bare address",
    ),
    (
        "xff-two-field-lines",
        [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "1.2.3.4")],
        {"REMOTE_ADDR": "1.2.3.4"},
        "RFC 9110 5.3: repeated field lines form one comma-separated list, read from the right",
    ),
    (
        "proto-https",
        [("X-Forwarded-Proto", "https")],
        {"wsgi.url_scheme": "https", "HTTPS": "on"},
        "X-Forwarded-Proto https sets wsgi.url_scheme and HTTPS=on",
    ),
    (
        "proto-rightmost",
        [("X-Forwarded-Proto", "http, https")],
        {"wsgi.url_scheme": "https"},
        "X-Forwarded-Proto: the rightmost value is the one the trusted peer set",
    ),
    (
        "proto-http",
        [("X-Forwarded-Proto", "https, http")],
        {"wsgi.url_scheme": "http"},
        "X-Forwarded-Proto: the rightmost value wins, also when it is http",
    ),
    (
        "xfh",
        [("X-Forwarded-Host", "shop.example")],
        {"HTTP_HOST": "shop.example", "SERVER_NAME": "shop.example"},
        "X-Forwarded-Host replaces HTTP_HOST and SERVER_NAME",
    ),
    (
        "xfport",
        [("X-Forwarded-Host", "shop.example"), ("X-Forwarded-Port", "8443")],
        {"SERVER_PORT": "8443", "SERVER_NAME": "shop.example"},
        "X-Forwarded-Port sets SERVER_PORT",
    ),
    (
        "fwd-for",
        [("Forwarded", "for=1.2.3.4")],
        {"REMOTE_ADDR": "1.2.3.4"},
        "RFC 7239 for= names the client",
    ),
    (
        "fwd-ipv6-quoted-port",
        [("Forwarded", 'for="[2001:db8:cafe::17]:4711"')],
        {"REMOTE_ADDR": "2001:db8:cafe::17"},
        "RFC 7239 6: a quoted, bracketed IPv6 node with a port",
    ),
    (
        "fwd-obfuscated-port",
        [("Forwarded", 'for="[2001:db8::1]:_p1"')],
        {"REMOTE_ADDR": "2001:db8::1"},
        "RFC 7239 6.3: a node port may be obfuscated (_name); the address still counts",
    ),
    (
        "fwd-unknown",
        [("Forwarded", "for=unknown")],
        {"REMOTE_ADDR": "unknown"},
        "RFC 7239 6.2: for=unknown gives REMOTE_ADDR 'unknown'",
    ),
    (
        "fwd-obfuscated",
        [("Forwarded", "for=_hidden")],
        {"REMOTE_ADDR": "_hidden"},
        "RFC 7239 6.3: an obfuscated identifier is passed on as is",
    ),
    (
        "fwd-case-insensitive-names",
        [("Forwarded", "For=1.2.3.4;PROTO=https")],
        {"REMOTE_ADDR": "1.2.3.4", "wsgi.url_scheme": "https"},
        "RFC 7239 4: parameter names are case-insensitive",
    ),
    (
        "fwd-rightmost-untrusted",
        [("Forwarded", "for=6.6.6.6, for=1.2.3.4, for=127.0.0.1")],
        {"REMOTE_ADDR": "1.2.3.4"},
        "Forwarded elements are read from the right, skipping trusted hops",
    ),
    (
        "fwd-beats-xff",
        [
            ("X-Forwarded-For", "5.5.5.5"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "xff.example"),
            ("Forwarded", "for=1.2.3.4;proto=https;host=fwd.example"),
        ],
        {
            "REMOTE_ADDR": "1.2.3.4",
            "wsgi.url_scheme": "https",
            "HTTP_HOST": "fwd.example",
            "SERVER_NAME": "fwd.example",
        },
        "Forwarded takes precedence over X-Forwarded-* when both are present",
    ),
    (
        "fwd-same-element",
        [
            (
                "Forwarded",
                'for=6.6.6.6;proto=http;host=evil.example, for=1.2.3.4;proto=https;host="good.example", for=127.0.0.1;proto=http;host=inner.example',
            )
        ],
        {
            "REMOTE_ADDR": "1.2.3.4",
            "wsgi.url_scheme": "https",
            "HTTP_HOST": "good.example",
            "SERVER_NAME": "good.example",
        },
        "Forwarded: proto and host come from the same element as the chosen client",
    ),
]


@pytest.mark.parametrize(
    "headers,expect,rule", [c[1:] for c in TRUSTED_CASES], ids=[c[0] for c in TRUSTED_CASES]
)
def test_trusted_peer(default_trust, headers, expect, rule):
    """From a trusted peer (127.0.0.1 with the default trust list) the
    forwarding headers are believed as the rule in each case says."""
    _, env = fetch(default_trust, headers)
    got = {k: env.get(k) for k in expect}
    assert got == expect, f"{rule}; headers {headers!r}"


def test_cidr_trust_list(cidr_trust):
    """Trust-list CIDR entries (IPv4 and IPv6) mark chain hops as trusted
    proxies, so they are skipped when looking for the client."""
    _, env = fetch(cidr_trust, [("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.1.2.3, 10.200.0.9")])
    assert env["REMOTE_ADDR"] == "1.2.3.4", "10.0.0.0/8 hops are trusted and skipped"
    _, env = fetch(cidr_trust, [("X-Forwarded-For", "9.9.9.9, 2001:db8:1::5")])
    assert env["REMOTE_ADDR"] == "9.9.9.9", "2001:db8::/32 hops are trusted and skipped"
    _, env = fetch(cidr_trust, [("X-Forwarded-For", "9.9.9.9, 2001:db9::5")])
    assert env["REMOTE_ADDR"] == "2001:db9::5", (
        "2001:db9::5 is outside 2001:db8::/32: it is the client"
    )


def test_trust_everyone_uses_leftmost(trust_all):
    """With --trusted-proxies "*" every address is trusted, so every chain
    entry is a trusted hop and the leftmost one is the client."""
    _, env = fetch(trust_all, [("X-Forwarded-For", "6.6.6.6, 1.2.3.4")])
    assert env["REMOTE_ADDR"] == "6.6.6.6"


# --- from an untrusted peer ---------------------------------------------------------

ALL_FORWARDING = [
    ("X-Forwarded-For", "1.2.3.4"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "8443"),
]


@pytest.mark.parametrize(
    "trust", ["10.0.0.0/8", "", "::1"], ids=["other-network", "nobody", "only-v6-loopback"]
)
@pytest.mark.parametrize(
    "with_rfc7239", [False, True], ids=["x-forwarded", "x-forwarded+forwarded"]
)
def test_untrusted_peer_changes_nothing(untrusting, trust, with_rfc7239):
    """From a peer outside the trust list (127.0.0.1 when the list is
    10.0.0.0/8, empty, or only ::1), no forwarding header changes
    REMOTE_ADDR, wsgi.url_scheme, HTTPS, HTTP_HOST, SERVER_NAME or SERVER_PORT."""
    srv = untrusting(trust)
    headers = list(ALL_FORWARDING)
    if with_rfc7239:
        headers.append(("Forwarded", 'for=1.2.3.4;proto=https;host="evil.example"'))
    host = f"127.0.0.1:{srv.port}"
    _, env = fetch(srv, headers, host=host)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert "HTTPS" not in env
    assert env["HTTP_HOST"] == host
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)


def test_embedded_trusted_proxies(module_server):
    """bartizan.Server(trusted_proxies=[...]): a list that covers 127.0.0.1
    believes X-Forwarded-For; one that does not (or an empty one) ignores it;
    a value that is not an IP or CIDR is a ValueError."""
    import bartizan

    from tests.apps.echo import app

    results = {}
    for name, trust in (
        ("covers", ["127.0.0.0/8"]),
        ("other", ["10.0.0.0/8", "fd00::/8"]),
        ("empty", []),
    ):
        s = bartizan.Server(app, port=0, threads=2, trusted_proxies=trust)
        s.start()
        try:
            r = raw_request(
                s.port, "GET", "/", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")]
            )
            env = r.json()["environ"]
            results[name] = (env["REMOTE_ADDR"], env["wsgi.url_scheme"])
        finally:
            s.stop(timeout=5)
    assert results == {
        "covers": ("1.2.3.4", "https"),
        "other": ("127.0.0.1", "http"),
        "empty": ("127.0.0.1", "http"),
    }
    with pytest.raises(ValueError):
        bartizan.Server(app, port=0, trusted_proxies=["not-an-address"])


def test_cli_bad_trusted_proxies_is_user_error(server):
    """--trusted-proxies with an entry that is no IP/CIDR ends with one
    clear line naming it and exit code 2, not a traceback."""
    rc, err = server(ECHO, "--trusted-proxies", "127.0.0.1,not-an-address", wait=False).outcome()
    assert rc == 2, err
    assert "not-an-address" in err and "Traceback" not in err, err


# --- malformed values -------------------------------------------------------------

MALFORMED = [
    ("xff-one-bad-entry", [("X-Forwarded-For", "1.2.3.4, not-an-ip")]),
    ("xff-garbage", [("X-Forwarded-For", "garbage!!")]),
    ("xff-bad-octet", [("X-Forwarded-For", "999.1.1.1")]),
    ("xff-empty", [("X-Forwarded-For", "")]),
    ("xff-obs-text", [("X-Forwarded-For", "1.2.3.4\xff")]),
    ("xff-unclosed-bracket", [("X-Forwarded-For", "[2001:db8::1")]),
    ("proto-gopher", [("X-Forwarded-Proto", "gopher")]),
    ("xfh-bad-chars", [("X-Forwarded-Host", "evil.example/<script>")]),
    ("xfport-out-of-range", [("X-Forwarded-Port", "99999")]),
    ("xfport-not-a-number", [("X-Forwarded-Port", "eighty")]),
    ("fwd-unbalanced-quote", [("Forwarded", 'for="[2001:db8::1')]),
    ("fwd-bad-octet", [("Forwarded", "for=999.1.1.1")]),
    ("fwd-garbage", [("Forwarded", "garbage")]),
    ("fwd-bad-proto", [("Forwarded", "for=1.2.3.4;proto=gopher")]),
    ("fwd-bad-node-port", [("Forwarded", 'for="[2001:db8::1]:abc"')]),
    ("fwd-bad-node-port-v4", [("Forwarded", 'for="1.2.3.4:abc"')]),
    ("fwd-empty", [("Forwarded", "")]),
]


@pytest.mark.parametrize("headers", [c[1] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_values_are_ignored(default_trust, headers):
    """A malformed forwarding header, even from a trusted peer, is ignored:
    the request is answered (never a 500) and REMOTE_ADDR, scheme, host and
    port stay those of the real connection."""
    host = f"127.0.0.1:{default_trust.port}"
    _r, env = fetch(default_trust, headers, host=host)
    assert env["REMOTE_ADDR"] == "127.0.0.1", headers
    assert env["wsgi.url_scheme"] == "http", headers
    assert env["HTTP_HOST"] == host, headers
    assert env["SERVER_PORT"] == str(default_trust.port), headers


def test_underscore_header_cannot_pose_as_forwarded(default_trust):
    """`X_Forwarded_For` (underscores) is dropped: it never becomes
    HTTP_X_FORWARDED_FOR and never sets REMOTE_ADDR; the same for the
    proto and host variants."""
    _, env = fetch(
        default_trust,
        [
            ("X_Forwarded_For", "6.6.6.6"),
            ("X_Forwarded_Proto", "https"),
            ("X_Forwarded_Host", "evil.example"),
        ],
    )
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    for key in ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST"):
        assert key not in env, f"{key} came from an underscore header: {env.get(key)!r}"


def test_underscore_header_does_not_override_dashed_one(default_trust):
    """With both `X-Forwarded-For: 1.2.3.4` and `X_Forwarded_For: 6.6.6.6`,
    only the dashed one counts (the underscore one is dropped, not merged)."""
    _, env = fetch(default_trust, [("X-Forwarded-For", "1.2.3.4"), ("X_Forwarded_For", "6.6.6.6")])
    assert env["REMOTE_ADDR"] == "1.2.3.4"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"


# --- IPv6 peers -------------------------------------------------------------------

needs_v6 = pytest.mark.skipif(
    not have_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host"
)


def v6_fetch(srv, headers):
    r = raw_request(srv.port, "GET", "/", headers, host="::1")
    assert r.status == 200, r
    return r.json()["environ"]


@needs_v6
def test_ipv6_peer_trusted_by_default(server):
    """A server bound on [::1] trusts a ::1 peer with the default list: its
    X-Forwarded-For names the client; without the header REMOTE_ADDR is ::1."""
    srv = server(ECHO, "--bind", "[::1]:0", "--threads", "2")
    env = v6_fetch(srv, [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")])
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("1.2.3.4", "https")
    env = v6_fetch(srv, [])
    assert env["REMOTE_ADDR"] == "::1"


@needs_v6
def test_ipv6_peer_not_in_list(server):
    """With --trusted-proxies 127.0.0.1 an IPv6 ::1 peer is not trusted:
    its forwarding headers change nothing."""
    srv = server(ECHO, "--bind", "[::1]:0", "--threads", "2", "--trusted-proxies", "127.0.0.1")
    env = v6_fetch(
        srv,
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=1.2.3.4"),
        ],
    )
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("::1", "http")
