"""The servers a run can measure. A server is a command line built from a Launch; adding
one (nginx, another WSGI server) is one entry in SERVERS. Also the groups of servers the
sections measure, and which row each section's ratios are against."""

import functools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib import BENCH, HOST, ROOT, VENV_PY
from lib.processes import server_env
from lib.setup import installed_version


@dataclass
class Launch:
    target: str  # what to serve: "module:attr" for WSGI servers
    port: int
    workdir: Path  # private scratch dir, e.g. for a generated config file
    static_dir: Path | None = None  # served under /static/ when set
    upstream: int | None = None  # port of the app server a proxy front forwards to


@dataclass
class ServerSpec:
    label: str
    argv: Callable[[Launch], list]
    # Returns why the server cannot run here, or None when it can.
    missing: Callable[[], str | None] = lambda: None
    version: Callable[[], str] = lambda: ""
    ready_line: str | None = None  # a line the server logs once listening
    stop_signal: int = signal.SIGTERM


def py(*args):
    return [str(VENV_PY), *args]


@functools.cache
def bartizan_missing():
    probe = (
        "import importlib.util, bartizan._bartizan\n"
        "assert importlib.util.find_spec('bartizan.__main__'), "
        "'bartizan has no __main__ (no `python -m bartizan` CLI yet)'\n"
    )
    done = subprocess.run(
        py("-c", probe), cwd=ROOT, env=server_env(), capture_output=True, text=True
    )
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    return f"not built or not importable ({last}); build the extension into .venv first"


def bartizan_version():
    probe = (
        "from importlib import metadata\n"
        "try: print(metadata.version('bartizan'))\n"
        "except metadata.PackageNotFoundError: print('source tree')\n"
    )
    done = subprocess.run(py("-c", probe), env=server_env(), capture_output=True, text=True)
    version = done.stdout.strip() or "?"
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{version} @ {rev}" if rev else version


def nginx_binary():
    # Debian puts it in /usr/sbin, which is not on a normal user's PATH.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_missing():
    if nginx_binary():
        return None
    return "not installed (Debian: apt-get install -y nginx)"


def nginx_version():
    done = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True)
    match = re.search(r"nginx/(\S+)", done.stderr + done.stdout)
    return match[1] if match else "?"


# What Bartizan's proxy front tells an app of who asked, said as nginx says it: the same
# request reaches the upstream from either front, so a ratio is of the fronts' own work.
NGINX_FORWARDING = [
    "proxy_set_header Host $http_host;",
    "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "proxy_set_header X-Forwarded-Host $http_host;",
    "proxy_set_header X-Forwarded-Proto $scheme;",
    'proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$http_host\\"";',
]


def nginx_site(launch, forwarding):
    """The http-level and server-level lines for what this launch serves; `forwarding` has
    a proxy tell the upstream who asked, as Bartizan's does."""
    if launch.upstream is not None:
        http = [
            # keepalive: idle connections to the app server are kept for reuse,
            # as Bartizan's proxy does; without it nginx connects per request.
            f"    upstream up {{ server {HOST}:{launch.upstream}; keepalive 32; }}",
        ]
        server = [
            "        location / {",
            "            proxy_pass http://up;",
            # Upstream keep-alive also needs HTTP/1.1 and no "Connection: close".
            "            proxy_http_version 1.1;",
            '            proxy_set_header Connection "";',
            *(f"            {line}" for line in (NGINX_FORWARDING if forwarding else [])),
            "        }",
        ]
        return http, server
    if launch.static_dir is not None:
        http = [
            "    sendfile on;",
            "    tcp_nopush on;",
            # Inline so the config does not depend on /etc/nginx.
            "    types { text/css css; }",
            "    default_type application/octet-stream;",
        ]
        server = [f'        location /static/ {{ alias "{launch.static_dir}/"; }}']
        return http, server
    raise ValueError("nginx only serves static files or proxies here")


def nginx_argv(launch, forwarding=True):
    """Write an nginx config into the workdir; run it in the foreground."""
    work = launch.workdir
    http, server = nginx_site(launch, forwarding)
    lines = [
        "daemon off;",  # the harness owns the process and its group
        "worker_processes 1;",
        f'pid "{work}/nginx.pid";',
        # stderr lands in the harness's server.log, which sits in the workdir.
        "error_log stderr warn;",
        "events {}",
        "http {",
        "    access_log off;",
        *http,
        # Debian's compiled-in temp paths are under /var/lib/nginx; keep ours private.
        *(
            f'    {kind}_temp_path "{work}/{kind}_temp";'
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
        "    server {",
        f"        listen {HOST}:{launch.port};",
        *server,
        "    }",
        "}",
    ]
    if os.geteuid() == 0:
        # As root, workers would drop to nobody and could not enter the 0700
        # scratch dir; keep them as the user running the harness, as without root.
        lines.insert(0, "user root;")
    conf = work / "nginx.conf"
    conf.write_text("\n".join(lines) + "\n")
    # -e: the compiled-in error log (/var/log/nginx) is opened before the config is read.
    return [nginx_binary(), "-p", str(work), "-c", str(conf), "-e", "stderr"]


def twisted_missing():
    if installed_version("twisted"):
        return None
    return "not installed (pinned in bench/requirements.txt)"


def static_args(launch, *flags):
    return list(flags) if launch.static_dir is not None else []


def bartizan_app(label, threads, checkout=None):
    """Bartizan serving the app, with the section's static files if it has any; from another
    `checkout` (its own .venv and build, for a before/after comparison) when given."""

    def run(*args):
        if checkout is None:
            return py(*args)
        # Its own package first, for the server and for the workers it starts.
        path = f"PYTHONPATH={ROOT}{os.pathsep}{checkout}/python"
        return ["env", path, f"{checkout}/.venv/bin/python", *args]

    # fmt: off
    return ServerSpec(
        label=label,
        argv=lambda launch: run(
            "-m", "bartizan", launch.target,
            "--host", HOST, "--port", str(launch.port), "--threads", str(threads),
            *static_args(launch, "--static", f"/static={launch.static_dir}"),
        ),
        missing=bartizan_missing,
        version=bartizan_version,
        ready_line="bartizan: listening on",
    )
    # fmt: on


def granian_app(label, blocking_threads):
    # fmt: off
    return ServerSpec(
        label=label,
        argv=lambda launch: py(
            "-m", "granian", "--interface", "wsgi",
            "--blocking-threads", str(blocking_threads), "--workers", "1",
            "--host", HOST, "--port", str(launch.port),
            *static_args(
                launch,
                "--static-path-route", "/static", "--static-path-mount", str(launch.static_dir),
            ),
            launch.target,
        ),
        version=lambda: installed_version("granian") or "?",
    )
    # fmt: on


def gunicorn_app(label, threads):
    # fmt: off
    return ServerSpec(
        label=label,
        argv=lambda launch: py(
            "-m", "gunicorn", "-k", "gthread", "--threads", str(threads), "-w", "1",
            "-b", f"{HOST}:{launch.port}", launch.target,
        ),
        version=lambda: installed_version("gunicorn") or "?",
    )
    # fmt: on


def nginx_server(label, forwarding=True):
    """nginx as a file server or, given an upstream, as a proxy: `nginx_argv` writes the
    config for whichever the launch asks."""
    return ServerSpec(
        label=label,
        argv=functools.partial(nginx_argv, forwarding=forwarding),
        missing=nginx_missing,
        version=nginx_version,
    )


# Unformatted so that each command line reads as one, a flag beside its value.
# fmt: off
SERVERS = {
    "bartizan": bartizan_app("bartizan", threads=4),
    "granian": granian_app("granian --blocking-threads 1", blocking_threads=1),
    "gunicorn": gunicorn_app("gunicorn-gthread", threads=4),
    # Static files only; the reference for the `static` section.
    "nginx": nginx_server("nginx"),
    # Proxy fronts: they forward to Launch.upstream and serve no app themselves.
    "bartizan-proxy": ServerSpec(
        label="bartizan proxy",
        argv=lambda launch: py(
            "-m", "bartizan", "proxy",
            "--bind", f"{HOST}:{launch.port}", "--upstream", f"{HOST}:{launch.upstream}",
        ),
        missing=bartizan_missing,
        version=bartizan_version,
        ready_line="bartizan: proxy listening on",
    ),
    "nginx-proxy": nginx_server("nginx proxy"),
    # nginx as configured out of the box: the app is told nothing of who asked, and the
    # request it gets is smaller than either front's above.
    "nginx-proxy-bare": nginx_server("nginx proxy, no forwarding headers", forwarding=False),
    "twisted-proxy": ServerSpec(
        label="twisted proxy",
        argv=lambda launch: py(
            str(BENCH / "twisted_proxy.py"), "--port", str(launch.port),
            "--upstream", f"{HOST}:{launch.upstream}",
        ),
        missing=twisted_missing,
        version=lambda: installed_version("twisted") or "?",
        ready_line="twisted proxy listening on",
    ),
}

# The pool sections (`io`, `mixed`, `cpu`): each server allowed many threads, as a site
# that waits on a database would be configured, beside Granian's default of one.
POOL_PEERS = {
    "bartizan-20": bartizan_app("bartizan --threads 20", threads=20),
    "bartizan-1": bartizan_app("bartizan --threads 1", threads=1),
    "granian-bt8": granian_app("granian --blocking-threads 8", blocking_threads=8),
    "gunicorn-20": gunicorn_app("gunicorn gthread 20", threads=20),
    "twisted-wsgi": ServerSpec(
        label="twisted wsgi pool 1-20",
        argv=lambda launch: py(
            str(BENCH / "twisted_wsgi.py"), "--port", str(launch.port), launch.target
        ),
        missing=twisted_missing,
        version=lambda: installed_version("twisted") or "?",
        ready_line="twisted wsgi listening on",
    ),
}
# fmt: on
SERVERS.update(POOL_PEERS)

WSGI_SERVERS = ["bartizan", "granian", "gunicorn"]
# BENCH_BARTIZAN_BASE: another checkout, built (`scripts/setup` there), say main before a
# change: measured beside the WSGI servers as `bartizan-base`.
if os.environ.get("BENCH_BARTIZAN_BASE"):
    base = os.environ["BENCH_BARTIZAN_BASE"]
    SERVERS["bartizan-base"] = bartizan_app("bartizan (base build)", threads=4, checkout=base)
    SERVERS["bartizan-base"].missing = lambda: None
    SERVERS["bartizan-base"].version = lambda: "base"
    WSGI_SERVERS.append("bartizan-base")
POOL_SERVERS = ["bartizan-20", "granian", "granian-bt8", "gunicorn-20", "twisted-wsgi"]
# The database page on SQLite: a page of Python between short C calls, so one thread is
# the reference (Granian's default, and Bartizan held to one).
DB_SERVERS = ["bartizan-20", "bartizan-1", "granian", "granian-bt8"]
STATIC_SERVERS = ["bartizan", "nginx", "granian"]
PROXY_FRONTS = ["bartizan-proxy", "nginx-proxy", "nginx-proxy-bare", "twisted-proxy"]
BASELINE = "bartizan"  # ratios in the table are BASELINE's value / the row's
# Row keys BENCH_SERVERS may name that are not servers of their own.
# The proxy section's upstream, measured directly; the evennia section's two games.
ROW_KEYS = ["upstream", "evennia-bartizan", "evennia-twisted"]
# Sections whose ratios are against another Bartizan row than BASELINE.
SECTION_BASELINES = {
    "proxy": "bartizan-proxy",
    "io": "bartizan-20",
    "mixed": "bartizan-20",
    "cpu": "bartizan-20",
    "db": "bartizan-20",
    "pg": "bartizan-20",
    "evennia-page": "evennia-bartizan",
    "evennia-static": "evennia-bartizan",
    "evennia-login": "evennia-bartizan",
    "evennia-reload": "evennia-bartizan",
}


def baseline(section):
    return SECTION_BASELINES.get(section, BASELINE)
