"""The `tls` section: HTTPS with HTTP/2, measured with h2load (Debian's nghttp2-client)
against nginx (`listen ... ssl`, `http2 on`) and Caddy, all three with the same ECDSA
certificate: a 4 KiB static file, the proxy hop to one shared Bartizan app server
(keep-alive to it), and full TLS handshakes per second (`openssl s_time -new`)."""

import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from lib import HOST, log
from lib.config import seconds
from lib.measure import launch_server
from lib.processes import (
    ServerFailed,
    free_port,
    log_tail,
    scratch,
    start_server,
    stop_server,
)
from lib.results import Row, goal_ratio
from lib.servers import bartizan_missing, nginx_binary, py

H2_CLIENTS = 32
H2_STREAMS = 8
HANDSHAKE_SECONDS = 8


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def bartizan_argv(port, cert, key, static_dir, upstream):
    common = ["--certfile", str(cert), "--keyfile", str(key)]
    if upstream is not None:
        return py("-m", "bartizan", "proxy", "--bind", f"{HOST}:{port}",
                  "--upstream", f"{HOST}:{upstream}", *common)  # fmt: skip
    return py("-m", "bartizan", "bench.apps.hello:app", "--bind", f"{HOST}:{port}",
              "--threads", "4", "--static", f"/static={static_dir}", *common)  # fmt: skip


def nginx_argv(work, port, cert, key, static_dir, upstream):
    if upstream is not None:
        http = f"upstream up {{ server {HOST}:{upstream}; keepalive 32; }}"
        site = ("location / { proxy_pass http://up; proxy_http_version 1.1; "
                'proxy_set_header Connection ""; }')  # fmt: skip
    else:
        http = "sendfile on; tcp_nopush on; types { text/css css; }"
        site = f'location /static/ {{ alias "{static_dir}/"; }}'
    temp = " ".join(
        f"{kind}_temp_path {work}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = f"""
daemon off; worker_processes 1; pid {work}/nginx.pid; error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off; {temp} {http}
    server {{
        listen {HOST}:{port} ssl http2;
        ssl_certificate {cert}; ssl_certificate_key {key};
        ssl_session_cache off; ssl_session_tickets off;
        keepalive_requests 1000000;
        {site}
    }}
}}
"""
    (work / "nginx.conf").write_text(conf)
    return [nginx_binary(), "-p", str(work), "-c", str(work / "nginx.conf"), "-e", "stderr"]


def caddy_argv(work, port, cert, key, static_dir, upstream):
    if upstream is not None:
        site = f"reverse_proxy {HOST}:{upstream}"
    else:
        site = f"handle_path /static/* {{\n        root * {static_dir}\n        file_server\n    }}"
    conf = f"""{{
    admin off
    auto_https off
    servers {{ protocols h1 h2 }}
}}
https://{HOST}:{port} {{
    tls {cert} {key}
    {site}
}}
"""
    (work / "Caddyfile").write_text(conf)
    return ["caddy", "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"]


SERVERS = {
    "bartizan": ("bartizan", lambda work, *a: bartizan_argv(*a), bartizan_missing),
    "nginx": ("nginx", nginx_argv, lambda: None if nginx_binary() else "nginx not installed"),
    "caddy": (
        "caddy",
        caddy_argv,
        lambda: None if shutil.which("caddy") else "caddy not installed",
    ),
}


def wait_https(proc, port, path, log_path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"exited ({proc.returncode}):\n{log_tail(log_path)}")
        done = subprocess.run(
            ["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
             f"https://{HOST}:{port}{path}"],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.stdout == "200 2":
            return
        time.sleep(0.2)
    raise ServerFailed(f"no HTTP/2 200 on {path} within {timeout} s:\n{log_tail(log_path)}")


def h2load(ctx, port, path):
    duration = round(seconds(ctx.cfg.duration))
    done = subprocess.run(
        ["h2load", "-c", str(H2_CLIENTS), "-m", str(H2_STREAMS), "-D", str(duration),
         "--warm-up-time", "2", f"https://{HOST}:{port}{path}"],
        capture_output=True, text=True, timeout=duration + 60,
    )  # fmt: skip
    text = done.stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    counts = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored",
        text,
    )
    codes = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (rps and counts and codes):
        raise ServerFailed(f"could not read h2load's output:\n{text}\n{done.stderr}")
    errors = sum(map(int, counts.groups())) + sum(map(int, codes.groups()))
    return {"rps": float(rps[1]), "errors": errors}


def handshakes(port):
    done = subprocess.run(
        ["openssl", "s_time", "-connect", f"{HOST}:{port}", "-new",
         "-time", str(HANDSHAKE_SECONDS)],
        capture_output=True, text=True, timeout=HANDSHAKE_SECONDS + 30,
    )  # fmt: skip
    found = re.search(r"(\d+) connections in ([\d.]+)s", done.stdout)
    if not found:
        raise ServerFailed(f"could not read openssl s_time's output:\n{done.stdout}{done.stderr}")
    return {"rps": int(found[1]) / float(found[2]), "errors": 0}


def measure(ctx, section, servers, path, how, static_dir=None, upstream=None):
    """Each server in turn, rounds rotated; a median row per server."""
    cert, key = make_certificate(Path(scratch()))
    active = []
    for name in servers:
        label, _, missing = SERVERS[name]
        reason = missing()
        if reason:
            ctx.rows.append(Row(section, name, label, note=f"skipped: {reason}"))
        else:
            active.append(name)
    samples = {name: [] for name in active}
    for round_no in range(ctx.cfg.runs):
        shift = round_no % len(active)
        for name in active[shift:] + active[:shift]:
            label, argv, _ = SERVERS[name]
            log(f"{section}: {label} (round {round_no + 1}/{ctx.cfg.runs})")
            work = Path(scratch()) / f"{section}-{name}-{round_no}"
            work.mkdir(parents=True, exist_ok=True)
            port = free_port()
            log_path = work / "server.log"
            proc = start_server(argv(work, port, cert, key, static_dir, upstream), log_path)
            try:
                wait_https(proc, port, path, log_path)
                result = how(ctx, port, path) if how is h2load else how(port)
                log(f"{section}: {label}: {result['rps']:.0f}/s, errors {result['errors']}")
                samples[name].append(result)
            finally:
                stop_server(proc)
    for name in active:
        if samples[name]:
            rps = statistics.median(s["rps"] for s in samples[name])
            errors = sum(s["errors"] for s in samples[name])
            ctx.rows.append(Row(section, name, SERVERS[name][0], rps=rps, errors=errors))


def section_tls(ctx):
    """HTTPS with HTTP/2 against nginx and Caddy: a static file, the proxy hop, handshakes."""
    if not shutil.which("h2load"):
        log("tls: skipping: h2load is not installed (apt-get install nghttp2-client)")
        return
    static_dir = Path(scratch()) / "tls-static"
    static_dir.mkdir(parents=True, exist_ok=True)
    from lib.sections import hello_ok, make_static_files

    make_static_files(static_dir)
    names = ["bartizan", "nginx", "caddy"]
    measure(ctx, "tls-static", names, "/static/small.css", h2load, static_dir=static_dir)
    up = launch_server(ctx, "bartizan", "tls-upstream", "bench.apps.hello:app", "/", hello_ok)
    try:
        measure(ctx, "tls-proxy", names, "/", h2load, upstream=up.port)
    finally:
        stop_server(up.proc)
    measure(ctx, "tls-handshakes", ["bartizan", "nginx"], "/static/small.css", handshakes,
            static_dir=static_dir)  # fmt: skip
    for section in ("tls-static", "tls-proxy"):
        goal_ratio(ctx, section, "nginx", 1.0, f"{section}: bartizan/nginx over TLS + h2")
        goal_ratio(ctx, section, "caddy", 1.2, f"{section}: bartizan/caddy over TLS + h2")
    goal_ratio(ctx, "tls-handshakes", "nginx", 1.0, "tls-handshakes: bartizan/nginx per second")
    ctx.notes.append(
        f"tls: h2load -c {H2_CLIENTS} -m {H2_STREAMS} over TLS 1.3 with one ECDSA P-256 "
        "certificate for every server; handshakes are `openssl s_time -new` (full "
        "handshakes, no resumption) from one client process"
    )
