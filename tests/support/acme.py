"""A real ACME CA on loopback for the HTTPS tests: Debian's `pebble`, with
`pebble-challtestsrv` as its DNS (every name resolves to 127.0.0.1). Its own HTTPS runs on a
certificate made here; the roots of what it issues are fetched from its management port."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.process import free_port


def redirect_of(port: int, host: str, path: str) -> str:
    """What a plain-HTTP listener answers for `host` and `path`: status and Location."""
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
         "-H", f"Host: {host}", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for localhost signed by it: (ca.pem, cert.pem, key.pem)."""
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=test ACME CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "key.pem", "-out", "srv.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    (directory / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "30", "-extfile", "ext.cnf",
        cwd=directory,
    )  # fmt: skip
    return directory / "ca.pem", directory / "cert.pem", directory / "key.pem"


class Pebble:
    """pebble and its DNS, checking names on `http_port` (http-01) and `tls_port`
    (tls-alpn-01) of 127.0.0.1."""

    def __init__(self, directory: Path, http_port: int, tls_port: int, blocked=()):
        if not (shutil.which("pebble") and shutil.which("pebble-challtestsrv")):
            pytest.skip("pebble is not installed (apt-get install pebble)")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca, cert, key = make_ca(directory)
        self.port, self.management, dns = free_port(), free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "domainBlocklist": list(blocked),
            }
        }
        (directory / "pebble.json").write_text(json.dumps(config))
        self.dns = subprocess.Popen(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        env = dict(
            os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0"
        )
        self.log = open(directory / "pebble.log", "w")
        self.proc = subprocess.Popen(
            ["pebble", "-config", str(directory / "pebble.json"), "-dnsserver",
             f"127.0.0.1:{dns}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + 20
        while True:
            try:
                self.get(f"https://127.0.0.1:{self.port}/dir")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, context=self.context, timeout=10) as r:
            return r.read()

    def roots(self) -> str:
        """The roots of what this pebble issues, as PEM (new at every start)."""
        return self.get(f"https://127.0.0.1:{self.management}/roots/0").decode()

    def stop(self) -> None:
        for proc in (self.proc, self.dns):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()
