"""The table of Bartizan's options: every one is an entry here, and nowhere else.

The command line's flags (``bartizan`` and ``bartizan proxy``), the keyword arguments of
``bartizan.Server`` and ``bartizan.Proxy`` and the config a worker process is started with are
all made from this table, so an option has one name, one default, one help text and one check.
Adding an option is one ``Option(...)`` below plus its use.

A bad value is reported once, in the caller's words: ``--threads '0': must be at least 1``
on the command line, ``threads=0: must be at least 1`` from Python.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Where an option is taken: by `bartizan` (an app server), by `bartizan proxy`, and whether
# it is a keyword of Server/Proxy (`EMBED`) or only steers the command line's supervisor.
SERVE, PROXY, EMBED = "serve", "proxy", "embed"


class OptionError(ValueError):
    """A bad option value. ``str()`` names the option as the caller spelled it: the flag, the
    keyword, or (``source``) the environment variable or config file it came from."""

    def __init__(
        self,
        option: Option,
        value: Any,
        problem: str,
        *,
        flag: bool = False,
        source: str | None = None,
    ):
        self.option, self.value, self.problem = option, value, problem
        if source is not None:
            shown = f"{source} {value!r}"
        elif flag:
            shown = f"{option.flag} {value!r}"
        else:
            shown = f"{option.name}={value!r}"
        super().__init__(f"{shown}: {problem}")


# --- parsers (text from the command line to a value) and checks (a value to a problem) -----


def parse_integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


def parse_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number of seconds") from None


def _words(text: str) -> list[str]:
    """A comma-separated list; empty items are dropped, so '' is the empty list."""
    return [w.strip() for w in text.split(",") if w.strip()]


def at_least(low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        return None if value >= low else f"must be at least {low}"

    return check


def between(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def seconds(*, positive: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number of seconds"
        if positive and not value > 0:
            return "must be more than 0 seconds"
        if not value >= 0 or value == float("inf"):
            return "must be a finite number of seconds, not negative"
        return None

    return check


def one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _bind(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a HOST:PORT string"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return "expected HOST:PORT, e.g. 0.0.0.0:8000 or [::1]:8000"
    return None


def _listen_address(value: Any) -> str | None:
    """A place to listen: HOST:PORT, or unix:/path for a unix socket."""
    if isinstance(value, str) and value.startswith("unix:"):
        return None if len(value) > len("unix:") else "expected unix:/path/to.sock"
    problem = _bind(value)
    return problem and problem.replace("e.g. 0.0.0.0:8000", "e.g. 0.0.0.0:8000, unix:/run/app.sock")


def _descriptor(value: Any) -> str | None:
    return None if isinstance(value, int) and value >= 0 else "must be a file descriptor number"


def _mount(value: Any) -> str | None:
    prefix, directory = value
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        return f"{prefix!r}: the URL prefix must start with /"
    if not os.path.isdir(directory):
        return f"{os.fspath(directory)!r} is not a directory"
    return None


def _root_path(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a URL path"
    if value and not value.startswith("/"):
        return "must start with /, e.g. /blog"
    if any(c in value for c in "?#%") or "//" in value:
        return "must be a plain path, e.g. /blog"
    return None


def _health_path(value: Any) -> str | None:
    if value is None:
        return None
    plain = isinstance(value, str) and all(0x21 <= ord(c) < 0x7F for c in value)
    if not value or not plain or _root_path(value) is not None:
        return "must be a plain path, e.g. /healthz"
    return None


def _static_spec(text: str) -> tuple[str, str]:
    prefix, sep, directory = text.partition("=")
    if not sep or not prefix or not directory:
        raise ValueError("expected PREFIX=DIR, e.g. /static=./static")
    return prefix, directory


def _route_spec(text: str) -> tuple[str, str]:
    prefix, sep, upstream = text.partition("=")
    if not sep or not prefix or not upstream:
        raise ValueError("expected PREFIX=HOST:PORT, e.g. /webclientdata=127.0.0.1:4010")
    return prefix, upstream


def _route_item(value: Any) -> tuple[str, str]:
    """A route from Python: ``"PREFIX=HOST:PORT"`` or a ``(prefix, upstream)`` pair."""
    if isinstance(value, str):
        try:
            return _route_spec(value)
        except ValueError:
            return value, ""  # the check names it
    prefix, upstream = value
    return prefix, upstream


def _route(value: Any) -> str | None:
    prefix, upstream = value
    if not isinstance(prefix, str) or not prefix.startswith("/") or not prefix.strip("/"):
        return f"{prefix!r}: the URL prefix must be a path under /, e.g. /webclientdata"
    if any(c in prefix for c in "?#% ") or "//" in prefix:
        return f"{prefix!r}: the URL prefix must be a plain path"
    problem = _bind(upstream)
    return f"{upstream!r} for {prefix}: {problem}" if problem else None


def _networks(values: Any) -> str | None:
    for value in values:
        if value == "*":
            continue
        try:
            ipaddress.ip_network(value, strict=False)
        except (TypeError, ValueError):
            return f"{value!r} is not an IP address or CIDR network"
    return None


def _domain(value: Any) -> str | None:
    """A DNS name a public CA issues for: letters, digits and dashes in dotted labels."""
    labels = value.split(".") if isinstance(value, str) else []
    plain = len(labels) >= 2 and all(
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in labels
    )
    return None if plain else "must be a domain name, e.g. example.com"


def _https_url(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("https://") and len(value) > len("https://"):
        return None
    return "must be an https:// URL"


def _email(value: Any) -> str | None:
    if value is None:
        return None
    name, at, host = value.partition("@") if isinstance(value, str) else ("", "", "")
    plain = at and name and "." in host and not any(c.isspace() for c in value)
    return None if plain else "must be an e-mail address"


def _share(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number between 0 and 1"
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def default_state_dir() -> str:
    """Where HTTPS keeps its account and certificates unless told: the user's state
    directory (XDG), as other per-user daemons keep theirs."""
    home_state = os.path.join(os.path.expanduser("~"), ".local", "state")
    base = os.environ.get("XDG_STATE_HOME") or home_state
    return os.path.join(base, "bartizan")


def prepare_state_dir(path: str) -> str | None:
    """Makes the state directory (mode 0700) and proves it can be written; the problem if
    not."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        probe = os.path.join(path, f".probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        return f"cannot be written: {e.strerror}"
    return None


def _file(value: Any) -> str | None:
    if value is None:
        return None
    return None if os.path.isfile(value) else f"{os.fspath(value)!r} is not a file"


# --- the table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    # Of each item, for an option that is a list.
    check: Callable[[Any], str | None] | None = None
    where: frozenset[str] = frozenset({SERVE, EMBED})
    metavar: str | None = None
    # Repeatable on the command line: each use adds one parsed item to a list.
    many: bool = False
    # A command-line switch (no value).
    switch: bool = False
    group: str = "serving"
    # The command line's spelling, when it is not the name's.
    cli_name: str | None = None
    # The one-letter flag people bring from other servers (-b, -w, -t).
    short: str | None = None
    # The default as the help shows it, when its value reads badly.
    shown: str | None = None
    # Of each item given from Python, for an option that is a list.
    coerce: Callable[[Any], Any] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def flag(self) -> str:
        return "--" + (self.cli_name or self.name).replace("_", "-")


def count_option(
    name: str, default: int, help: str, *, low: int, high: int | None = None, **more: Any
) -> Option:
    """A whole number of at least `low` (and at most `high`)."""
    check = at_least(low) if high is None else between(low, high)
    return Option(name, default, help, parse=parse_integer, check=check, **more)


def seconds_option(name: str, default: float, help: str, *, positive: bool, **more: Any) -> Option:
    """A number of seconds; more than 0 when `positive`."""
    return Option(
        name, default, help, parse=parse_seconds, check=seconds(positive=positive), **more
    )


def head_limit_option(name: str, help: str) -> Option:
    """A bound on part of a request's head in bytes, 8190 as nginx and Gunicorn ship it."""
    return count_option(
        name, 8190, help, where=BOTH, group="requests", metavar="BYTES", low=64, high=1 << 20
    )


def repeated_option(name: str, help: str, *, metavar: str, **more: Any) -> Option:
    """A list, empty by default; each use on the command line adds one item."""
    return Option(name, [], help, metavar=metavar, many=True, **more)


def file_option(name: str, help: str, **more: Any) -> Option:
    """A path to a file that must exist; off by default."""
    return Option(name, None, help, check=_file, where=BOTH, metavar="PATH", **more)


def mount_option(name: str, help: str) -> Option:
    """A repeatable PREFIX=DIR mount, taken everywhere."""
    return repeated_option(
        name,
        help,
        parse=_static_spec,
        check=_mount,
        where=frozenset({SERVE, PROXY, EMBED}),
        metavar="PREFIX=DIR",
        group="files",
        coerce=lambda mount: (mount[0], os.fspath(mount[1])),
    )


BOTH = frozenset({SERVE, PROXY, EMBED})
CLI_SERVE = frozenset({SERVE})
CLI_BOTH = frozenset({SERVE, PROXY})
PROXY_ONLY = frozenset({PROXY, EMBED})

OPTIONS: tuple[Option, ...] = (
    # Where to listen.
    Option("host", "127.0.0.1", "address to listen on", where=BOTH, group="listening"),
    Option(
        "port",
        8000,
        "port to listen on; 0 picks a free one",
        parse=parse_integer,
        check=between(0, 65535),
        where=BOTH,
        group="listening",
    ),
    repeated_option(
        "bind",
        "listen here instead of --host/--port; repeatable, e.g. [::1]:8000, or "
        "unix:/run/app.sock for a unix socket (made with mode 0666, removed at stop)",
        check=_listen_address,
        where=BOTH,
        metavar="ADDR:PORT",
        group="listening",
        short="-b",
    ),
    repeated_option(
        "fds",
        "serve on this listening socket, inherited as a file descriptor from whoever started "
        "the server, instead of binding; repeatable (under systemd socket activation, "
        "LISTEN_FDS is read without it)",
        parse=parse_integer,
        check=_descriptor,
        where=CLI_BOTH,
        metavar="N",
        group="listening",
        cli_name="fd",
    ),
    # The app and its thread pool.
    count_option(
        "threads", 20, "most app threads per worker", group="app", low=1, high=1024, short="-t"
    ),
    count_option("min_threads", 1, "app threads kept while idle", group="app", low=0),
    count_option(
        "queue", 1024, "requests that may wait for a thread; beyond that, 503", group="app", low=1
    ),
    Option(
        "root_path",
        "",
        "serve the app under this URL prefix (SCRIPT_NAME)",
        check=_root_path,
        group="app",
    ),
    count_option(
        "retry_after", 1, "seconds in the Retry-After header of a 503", group="app", low=0
    ),
    # Requests.
    count_option(
        "max_body",
        1 << 30,
        "largest request body in bytes; larger gets 413",
        group="requests",
        metavar="BYTES",
        shown="1 GiB",
        low=1,
    ),
    seconds_option(
        "body_timeout",
        60.0,
        "seconds a request body may pause between reads",
        group="requests",
        positive=True,
    ),
    seconds_option(
        "header_timeout",
        60.0,
        "seconds a client has to send a request's head once it begins, and a new connection "
        "to begin its first (nginx's client_header_timeout)",
        where=BOTH,
        group="requests",
        positive=True,
    ),
    seconds_option(
        "keep_alive",
        75.0,
        "seconds an idle connection stays open for its next request (nginx's "
        "keepalive_timeout); 0 closes each connection after its answer",
        where=BOTH,
        group="requests",
        positive=False,
    ),
    seconds_option(
        "request_timeout",
        0.0,
        "seconds the app may run one request: past them it is answered 504 (or its connection "
        "cut, if the answer had begun), its thread's Python stack is logged, and the thread "
        "counts as stuck instead of taking a place among --threads; 0 for no limit",
        group="requests",
        positive=False,
    ),
    count_option(
        "max_head",
        65536,
        "largest request head (request line and header fields) in bytes; larger gets 431",
        where=BOTH,
        group="requests",
        metavar="BYTES",
        low=1024,
        high=1 << 24,
    ),
    head_limit_option(
        "limit_request_line",
        "longest request line (method, target, version) in bytes; longer gets 414",
    ),
    head_limit_option(
        "limit_request_field_size",
        "longest header field (name and value) in bytes; longer gets 431",
    ),
    count_option(
        "limit_request_fields",
        100,
        "most header fields in a request; more gets 431",
        where=BOTH,
        group="requests",
        low=1,
        high=10_000,
    ),
    Option(
        "health_path",
        None,
        "answer this path from Rust, without the app: 200 while the worker takes work, 503 "
        "from the moment it drains (stop, reload), for load balancers; off by default",
        check=_health_path,
        where=BOTH,
        metavar="PATH",
        group="requests",
    ),
    count_option(
        "max_connections",
        1000,
        "connections served at once per worker; more wait in the listen backlog",
        where=BOTH,
        group="requests",
        low=1,
    ),
    count_option(
        "http2_max_streams",
        100,
        "streams one HTTP/2 connection may have open at once",
        where=BOTH,
        group="requests",
        low=1,
        high=10_000,
    ),
    count_option(
        "io_threads",
        2,
        "network threads per worker",
        where=BOTH,
        group="requests",
        low=1,
        high=64,
    ),
    # Files.
    mount_option(
        "static", "serve DIR under URL PREFIX from Rust, e.g. /static=./static; repeatable"
    ),
    mount_option(
        "media",
        "serve user uploads in DIR under URL PREFIX: like --static, but an SVG, HTML or XML "
        "file is sandboxed (Content-Security-Policy: sandbox) so it cannot run scripts as the "
        "site; Django's MEDIA_ROOT is mounted so; repeatable",
    ),
    count_option(
        "static_max_age",
        3600,
        "Cache-Control max-age for static files without a content hash in the name",
        where=BOTH,
        group="files",
        metavar="S",
        low=0,
    ),
    # Proxies.
    Option(
        "trusted_proxies",
        ["127.0.0.1", "::1"],
        "comma-separated IPs/CIDRs whose X-Forwarded-* and Forwarded headers are believed; "
        "empty for none",
        parse=_words,
        check=_networks,
        where=BOTH,
        group="proxies",
        metavar="IPS",
    ),
    repeated_option(
        "upstreams",
        "an app server to forward to; repeatable (round-robin)",
        check=_bind,
        where=PROXY_ONLY,
        metavar="HOST:PORT",
        cli_name="upstream",
        group="proxying",
    ),
    Option(
        "upstream_health",
        None,
        "ask each upstream for this path every --upstream-health-interval; one that answers "
        "other than 2xx/3xx (a draining Bartizan answers 503 on its --health-path), or not at "
        "all, gets no requests until it passes again; off by default",
        check=_health_path,
        where=PROXY_ONLY,
        metavar="PATH",
        group="proxying",
    ),
    seconds_option(
        "upstream_health_interval",
        2.0,
        "seconds between two health checks of an upstream",
        where=PROXY_ONLY,
        group="proxying",
        positive=True,
    ),
    seconds_option(
        "upstream_wait",
        30.0,
        "seconds a request waits for an upstream to come back; then 503",
        where=BOTH,
        group="proxying",
        positive=False,
    ),
    repeated_option(
        "routes",
        "forward requests under URL PREFIX to HOST:PORT; repeatable, e.g. "
        "/webclientdata=127.0.0.1:4010",
        parse=_route_spec,
        check=_route,
        where=BOTH,
        metavar="PREFIX=HOST:PORT",
        cli_name="route",
        group="proxying",
        coerce=_route_item,
    ),
    seconds_option(
        "connect_timeout",
        5.0,
        "seconds to connect to an upstream",
        where=BOTH,
        group="proxying",
        positive=True,
    ),
    seconds_option(
        "response_timeout",
        60.0,
        "seconds an upstream may take to send its response's head; then 504",
        where=BOTH,
        group="proxying",
        positive=True,
    ),
    repeated_option(
        "https",
        "serve HTTPS for this domain with a certificate obtained and renewed over ACME "
        "(tls-alpn-01 on the listeners of --bind, http-01 on --http-redirect); repeatable, "
        "one certificate names them all",
        check=_domain,
        where=BOTH,
        metavar="DOMAIN",
        group="https",
    ),
    Option(
        "acme_directory",
        "https://acme-v02.api.letsencrypt.org/directory",
        "the ACME directory certificates are ordered from (default: Let's Encrypt)",
        check=_https_url,
        where=BOTH,
        metavar="URL",
        group="https",
    ),
    file_option(
        "acme_ca",
        "PEM roots to trust for the ACME server's own HTTPS, for a private CA",
        group="https",
    ),
    Option(
        "acme_email",
        None,
        "contact address given to the CA with the account (expiry notices)",
        check=_email,
        where=BOTH,
        metavar="ADDR",
        group="https",
    ),
    Option(
        "state_dir",
        None,
        "where HTTPS keeps its ACME account and certificates (files 0600)",
        where=BOTH,
        metavar="DIR",
        group="https",
        shown="$XDG_STATE_HOME/bartizan or ~/.local/state/bartizan",
    ),
    Option(
        "acme_renew_at",
        2 / 3,
        "renew a certificate once this share of its lifetime has passed",
        parse=parse_seconds,
        check=_share,
        where=BOTH,
        metavar="SHARE",
        group="https",
        shown="0.667",
    ),
    repeated_option(
        "http_redirect",
        "a plain-HTTP listener that answers ACME http-01 checks and sends everything else "
        "a 308 to the https URL; repeatable, e.g. 0.0.0.0:80",
        check=_bind,
        where=BOTH,
        metavar="ADDR:PORT",
        group="https",
    ),
    count_option(
        "hsts",
        0,
        "send Strict-Transport-Security with this max-age on HTTPS answers; 0 for none",
        where=BOTH,
        group="https",
        metavar="SECONDS",
        low=0,
    ),
    file_option("certfile", "PEM certificate chain: serve HTTPS", group="https"),
    file_option("keyfile", "PEM private key for --certfile", group="https"),
    # Logs.
    Option(
        "access_log",
        None,
        "log each request: alone, to standard output; as --access-log=PATH, to a file "
        "(the value is never taken from the next word); off by default",
        where=frozenset({SERVE, EMBED}),
        metavar="PATH",
        group="logs",
        extra={"nargs": "?", "const": "-"},
    ),
    Option(
        "access_log_format",
        "combined",
        "combined: Combined Log Format plus the duration in microseconds; json: one object a line",
        check=one_of("combined", "json"),
        metavar="FORMAT",
        group="logs",
        extra={"choices": ["combined", "json"]},
    ),
    # The command line's own: the supervisor and its workers.
    seconds_option(
        "graceful_timeout",
        30.0,
        "seconds in-flight requests get to finish on stop",
        where=CLI_BOTH,
        group="processes",
        positive=False,
    ),
    count_option(
        "workers",
        1,
        "worker processes sharing the port; SIGHUP reloads them",
        where=CLI_SERVE,
        group="processes",
        low=1,
        short="-w",
    ),
    count_option(
        "max_requests",
        0,
        "recycle a worker after about this many requests (checked each second): its "
        "replacement starts first, and it stops only once that one serves; 0 for never",
        where=CLI_SERVE,
        group="processes",
        low=0,
    ),
    count_option(
        "max_requests_jitter",
        0,
        "add up to this many to each worker's --max-requests, so workers do not all recycle "
        "at once",
        where=CLI_SERVE,
        group="processes",
        low=0,
    ),
    count_option(
        "max_rss",
        0,
        "recycle a worker whose resident memory passes this many MiB (checked each second); "
        "0 for never",
        where=CLI_SERVE,
        group="processes",
        metavar="MIB",
        low=0,
    ),
    count_option(
        "stuck_limit",
        0,
        "recycle a worker once this many of its requests are stuck past --request-timeout; "
        "a stuck thread that never returns ends with its process after --graceful-timeout; "
        "0 for never",
        where=CLI_SERVE,
        group="processes",
        low=0,
    ),
    Option(
        "reload",
        False,
        "reload the workers when a .py file under the current directory changes",
        switch=True,
        where=CLI_SERVE,
        group="processes",
    ),
    Option(
        "metrics",
        None,
        "serve Prometheus metrics for all workers at http://ADDR:PORT/metrics",
        check=lambda v: None if v is None else _bind(v),
        where=CLI_SERVE,
        metavar="ADDR:PORT",
        group="logs",
    ),
    Option(
        "chdir",
        None,
        "change to DIR first: the app is imported and the config file looked for there",
        check=lambda v: None if v is None or os.path.isdir(v) else f"{v!r} is not a directory",
        where=CLI_BOTH,
        metavar="DIR",
        group="app",
    ),
    Option(
        "pythonpath",
        [],
        "comma-separated directories put first on the import path",
        parse=_words,
        where=CLI_SERVE,
        metavar="DIRS",
        group="app",
    ),
    Option(
        "config",
        None,
        "read options from this TOML file (default: ./bartizan.toml, or [tool.bartizan] in "
        "./pyproject.toml)",
        check=_file,
        where=CLI_BOTH,
        metavar="PATH",
        group="processes",
    ),
    Option(
        "log_level",
        "info",
        "debug (also shows the traceback of an app that fails to load), info, warning or error",
        check=one_of("debug", "info", "warning", "error"),
        where=CLI_BOTH,
        metavar="LEVEL",
        group="logs",
        extra={"choices": ["debug", "info", "warning", "error"]},
    ),
    Option(
        "check",
        False,
        "run Django's system checks before a worker serves; a failing check stops the start "
        "or the reload",
        switch=True,
        where=CLI_SERVE,
        group="app",
    ),
    Option(
        "factory",
        False,
        "MODULE:NAME is called to make the app",
        switch=True,
        where=CLI_SERVE,
        group="app",
    ),
    Option(
        "django",
        False,
        "mount STATIC_ROOT and MEDIA_ROOT at STATIC_URL and MEDIA_URL (automatic for Django apps)",
        switch=True,
        where=CLI_SERVE,
        group="files",
    ),
    Option(
        "no_django_static",
        False,
        "do not mount Django's static and media roots automatically",
        switch=True,
        where=CLI_SERVE,
        group="files",
    ),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}

GROUPS = {
    "listening": "where to listen",
    "app": "the app and its threads",
    "requests": "requests",
    "files": "static and media files",
    "proxies": "behind a proxy",
    "proxying": "the proxy front",
    "https": "HTTPS",
    "logs": "logs and metrics",
    "processes": "processes",
}


def for_command(command: str) -> list[Option]:
    return [o for o in OPTIONS if command in o.where]


def check_value(option: Option, value: Any, *, flag: bool = False) -> Any:
    """The value, or an OptionError naming the option and the item that is wrong."""
    if option.check is not None:
        for item in value if option.many else [value]:
            problem = option.check(item)
            if problem:
                raise OptionError(option, item, problem, flag=flag)
    return value


def check_together(values: dict[str, Any], *, flag: bool = False) -> None:
    """Rules between options, checked once all are known; the state directory made ready
    when HTTPS over ACME needs one."""
    if "min_threads" in values and "threads" in values:
        if values["min_threads"] > values["threads"]:
            raise OptionError(
                BY_NAME["min_threads"],
                values["min_threads"],
                f"must not be more than threads ({values['threads']})",
                flag=flag,
            )
    if values.get("https") and values.get("certfile"):
        raise OptionError(
            BY_NAME["https"],
            values["https"][0],
            f"and {BY_NAME['certfile'].flag if flag else 'certfile'}: one or the other",
            flag=flag,
        )
    if values.get("http_redirect") and not (values.get("https") or values.get("certfile")):
        raise OptionError(
            BY_NAME["http_redirect"],
            values["http_redirect"][0],
            "redirects to HTTPS: needs https or certfile",
            flag=flag,
        )
    if values.get("https"):
        values["state_dir"] = values.get("state_dir") or default_state_dir()
        problem = prepare_state_dir(values["state_dir"])
        if problem:
            raise OptionError(BY_NAME["state_dir"], values["state_dir"], problem, flag=flag)
    if bool(values.get("certfile")) != bool(values.get("keyfile")):
        missing = "keyfile" if values.get("certfile") else "certfile"
        given = BY_NAME["certfile" if missing == "keyfile" else "keyfile"]
        raise OptionError(
            given,
            values[given.name],
            f"needs {BY_NAME[missing].flag if flag else missing}",
            flag=flag,
        )


def embed_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """Server/Proxy keyword arguments: every embedding option, with the table's defaults,
    checked. An unknown keyword is a TypeError, as for any Python function."""
    known = {o.name for o in OPTIONS if EMBED in o.where}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    values = {}
    for option in OPTIONS:
        if EMBED not in option.where:
            continue
        value = given.get(option.name, option.default)
        if option.many or isinstance(option.default, list):
            value = _as_list(option, value)
        values[option.name] = check_value(option, value)
    check_together(values)
    return values


def _as_list(option: Option, value: Any) -> list:
    """A list-valued keyword: None is empty; a string reads as it would on the command line
    (one item of a repeatable option, or a whole comma-separated list); a mapping gives its
    items."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            parsed = option.parse(value)
        except ValueError as e:
            raise OptionError(option, value, str(e)) from None
        value = [parsed] if option.many else parsed
    elif isinstance(value, Mapping):
        value = value.items()
    elif not isinstance(value, Iterable):
        raise OptionError(option, value, "must be a list")
    return [option.coerce(v) for v in value] if option.coerce else list(value)
