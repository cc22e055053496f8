"""Every option of the table that a server takes arrives in the Rust config with its value:
each is set to something other than its default, and the core reads them all back. An option
added to the table without its Rust field (or the other way round) fails here."""

import ipaddress
import os

import bartizan
import pytest
from bartizan import options
from bartizan._bartizan import Server as CoreServer


def app(environ, start_response):
    start_response("200 OK", [])
    return [b""]


def samples(tmp_path):
    static, media = tmp_path / "static", tmp_path / "media"
    static.mkdir()
    media.mkdir()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("")
    key.write_text("")
    return {
        "bind": ["127.0.0.1:0"],
        "threads": 7,
        "min_threads": 3,
        "queue": 99,
        "root_path": "/blog",
        "retry_after": 4,
        "max_body": 12345,
        "body_timeout": 1.5,
        "header_timeout": 2.5,
        "keep_alive": 3.5,
        "request_timeout": 4.5,
        "max_head": 4096,
        "limit_request_line": 1000,
        "limit_request_field_size": 2000,
        "limit_request_fields": 50,
        "health_path": "/healthz",
        "max_connections": 77,
        "http2_max_streams": 33,
        "io_threads": 3,
        "static": [("/s", str(static))],
        "media": [("/m", str(media))],
        "static_max_age": 60,
        "trusted_proxies": ["10.0.0.0/8", "::1"],
        "upstreams": ["127.0.0.1:9"],
        "upstream_health": "/up",
        "upstream_health_interval": 0.5,
        "upstream_wait": 6.5,
        "routes": [("/ajax", "127.0.0.1:10")],
        "connect_timeout": 7.5,
        "response_timeout": 8.5,
        "certfile": str(cert),
        "keyfile": str(key),
        "https": ["app.example.com", "www.example.com"],
        "acme_directory": "https://ca.example/dir",
        "acme_ca": str(cert),
        "acme_email": "ops@example.com",
        "state_dir": str(tmp_path / "state"),
        "acme_renew_at": 0.5,
        "http_redirect": ["127.0.0.1:0"],
        "hsts": 600,
        "access_log": str(tmp_path / "access.log"),
        "access_log_format": "json",
    }


def as_held(name, value):
    """A value as the core holds it: directories resolved, addresses as networks."""
    if name in ("static", "media"):
        return [(prefix, os.path.realpath(d)) for prefix, d in value]
    if name == "trusted_proxies":
        return [str(ipaddress.ip_network(v)) for v in value]
    if name in ("certfile", "keyfile", "acme_ca", "state_dir"):
        return value and os.fspath(value)
    return value


# Certificates come from files or over ACME, not both: each pass sets one way.
FILES = {"certfile", "keyfile"}
ACME = {"https", "state_dir"}


def test_every_option_reaches_the_core_and_comes_back(tmp_path):
    given = samples(tmp_path)
    taken = {o.name for o in options.OPTIONS if options.EMBED in o.where} - {"host", "port"}
    assert set(given) == taken, "each option a server takes needs a sample here"
    for name, value in given.items():
        assert value != options.BY_NAME[name].default, name
    for left_out in (ACME, FILES):
        one_way = {k: v for k, v in given.items() if k not in left_out}
        held = bartizan.Server(app, **one_way)._core.options()
        assert set(held) == taken
        for name, value in one_way.items():
            got = held[name]
            if isinstance(got, list):
                got = [tuple(x) if isinstance(x, tuple | list) else x for x in got]
                got = [(p, os.fspath(d)) for p, d in got] if name in ("static", "media") else got
            if name in ("certfile", "keyfile", "acme_ca", "state_dir"):
                got = os.fspath(got)
            assert got == as_held(name, value), name


def test_the_defaults_reach_the_core_too():
    held = bartizan.Server(app, port=0)._core.options()
    for name in ("threads", "max_body", "keep_alive", "max_head", "access_log_format"):
        assert held[name] == options.BY_NAME[name].default, name
    assert held["bind"] == ["127.0.0.1:0"]


def test_the_core_takes_no_half_mapping():
    with pytest.raises(KeyError):
        CoreServer(app, {"bind": ["127.0.0.1:0"], "threads": 2})


def test_max_head_is_an_option_everywhere():
    assert bartizan.Server(app, port=0, max_head=2048)._core.options()["max_head"] == 2048
    with pytest.raises(ValueError, match="max_head=10: must be between 1024"):
        bartizan.Server(app, port=0, max_head=10)
