"""What keeps an embedded server from starting is one exception naming what
failed: a bad value is a ValueError naming the option, a refusal by the system
an OSError with its errno and the path or address it was about."""

import errno
import socket

import bartizan
import pytest


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


def test_a_missing_access_log_directory_names_the_path(tmp_path):
    path = tmp_path / "no-such-dir" / "access.log"
    server = bartizan.Server(app, port=0, access_log=str(path))
    with pytest.raises(FileNotFoundError) as caught:
        server.start()
    assert caught.value.errno == errno.ENOENT
    assert str(path) in str(caught.value)
    assert "network threads" not in str(caught.value)


def test_a_port_in_use_names_the_address():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        server = bartizan.Server(app, port=port)
        with pytest.raises(OSError) as caught:
            server.start()
    finally:
        holder.close()
    assert caught.value.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_a_certificate_that_is_no_certificate_names_the_file(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    proxy = bartizan.Proxy(["127.0.0.1:1"], port=0, certfile=cert, keyfile=key)
    with pytest.raises(ValueError) as caught:
        proxy.start()
    assert "certfile" in str(caught.value)
    assert str(cert) in str(caught.value)


def test_a_bad_value_names_the_option_as_a_keyword():
    with pytest.raises(ValueError, match=r"^threads=0: must be between 1 and 1024$"):
        bartizan.Server(app, threads=0)
    with pytest.raises(ValueError, match=r"^port=70000: must be between 0 and 65535$"):
        bartizan.Server(app, port=70000)
    with pytest.raises(ValueError, match=r"^trusted_proxies=.*'not-an-ip' is not an IP address"):
        bartizan.Server(app, trusted_proxies=["10.0.0.0/8", "not-an-ip"])


def test_an_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="'thread'"):
        bartizan.Server(app, thread=4)
