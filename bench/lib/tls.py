"""The `tls` section: HTTPS with HTTP/2, measured with h2load (Debian's nghttp2-client)
against nginx (`listen ... ssl`, `http2 on`) and Caddy, all three with the same ECDSA
certificate: a 4 KiB static file, the proxy hop to one shared Bartizan app server
(keep-alive to it), and full TLS handshakes per second (`openssl s_time -new`)."""

import functools
import os
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
from lib.servers import NGINX_FORWARDING, bartizan_missing, nginx_binary, py

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


def nginx_argv(work, port, cert, key, static_dir, upstream, workers=1):
    if upstream is not None:
        http = f"upstream up {{ server {HOST}:{upstream}; keepalive 32; }}"
        forwarding = " ".join(NGINX_FORWARDING)
        site = ("location / { proxy_pass http://up; proxy_http_version 1.1; "
                f'proxy_set_header Connection ""; {forwarding} }}')  # fmt: skip
    else:
        http = "sendfile on; tcp_nopush on; types { text/css css; }"
        site = f'location /static/ {{ alias "{static_dir}/"; }}'
    temp = " ".join(
        f"{kind}_temp_path {work}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, workers would drop to nobody and could not enter the 0700 scratch dir.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = f"""
{user} daemon off; worker_processes {workers}; pid {work}/nginx.pid; error_log stderr warn;
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
    servers {{
        protocols h1 h2
    }}
}}
https://{HOST}:{port} {{
    tls {cert} {key}
    {site}
}}
"""
    (work / "Caddyfile").write_text(conf)
    return ["caddy", "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"]


def caddy_missing():
    return None if shutil.which("caddy") else "not installed (apt-get install caddy)"


def nginx_missing():
    return None if nginx_binary() else "not installed (apt-get install nginx)"


# Each: its label, its command line, why it cannot run here.
SERVERS = {
    "bartizan": ("bartizan", lambda work, *a: bartizan_argv(*a), bartizan_missing),
    "nginx": ("nginx", nginx_argv, nginx_missing),
    # As many workers as cores, as nginx ships (Bartizan runs two network threads).
    "nginx-2": ("nginx, 2 workers", functools.partial(nginx_argv, workers=2), nginx_missing),
    "caddy": ("caddy", caddy_argv, caddy_missing),
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


def cpu_seconds(pid):
    """CPU time (user + system) of `pid` and its descendants."""
    from tests.support.procfs import tree_pids

    ticks = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def handshakes(port, pid):
    """Full handshakes per CPU-second of the server: one client process cannot keep a
    server busy (its own half of each handshake costs as much), so the rate per wall
    second would measure the client."""
    before = cpu_seconds(pid)
    done = subprocess.run(
        ["openssl", "s_time", "-connect", f"{HOST}:{port}", "-new",
         "-time", str(HANDSHAKE_SECONDS)],
        capture_output=True, text=True, timeout=HANDSHAKE_SECONDS + 30,
    )  # fmt: skip
    used = cpu_seconds(pid) - before
    found = re.search(r"(\d+) connections in ([\d.]+)s", done.stdout)
    if not found or used <= 0:
        raise ServerFailed(f"could not read openssl s_time's output:\n{done.stdout}{done.stderr}")
    return {"rps": int(found[1]) / used, "errors": 0}


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
                result = how(ctx, port, path) if how is h2load else how(port, proc.pid)
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
    names = ["bartizan", "nginx", "nginx-2", "caddy"]
    measure(ctx, "tls-static", names, "/static/small.css", h2load, static_dir=static_dir)
    up = launch_server(ctx, "bartizan", "tls-upstream", "bench.apps.hello:app", "/", hello_ok)
    try:
        measure(ctx, "tls-proxy", names, "/", h2load, upstream=up.port)
    finally:
        stop_server(up.proc)
    handshaking = ["bartizan", "nginx", "nginx-2"]
    small = "/static/small.css"
    measure(ctx, "tls-handshakes", handshaking, small, handshakes, static_dir=static_dir)
    for section in ("tls-static", "tls-proxy"):
        for nginx in ("nginx", "nginx-2"):
            goal_ratio(ctx, section, nginx, 1.0, f"{section}: bartizan/{nginx} over TLS + h2")
        goal_ratio(ctx, section, "caddy", 1.2, f"{section}: bartizan/caddy over TLS + h2")
    for nginx in ("nginx", "nginx-2"):
        text = f"tls-handshakes: bartizan/{nginx} per server CPU-second"
        goal_ratio(ctx, "tls-handshakes", nginx, 1.0, text)
    ctx.notes.append(
        f"tls: h2load -c {H2_CLIENTS} -m {H2_STREAMS} over TLS 1.3 with one ECDSA P-256 "
        "certificate for every server; nginx with one worker process and with two, Bartizan "
        "with its default two network threads, Caddy as Go schedules it; handshakes are "
        "`openssl s_time -new` (full handshakes, no resumption), counted per CPU-second the "
        "server used"
    )
