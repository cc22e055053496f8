"""`bartizan MODULE:APP [options]`: serve a WSGI app from the command line.

User mistakes (a bad option, an app that cannot be imported) end with one clear line and
exit code 2, never a traceback. The app itself runs in worker processes (see supervisor.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable

import bartizan
from bartizan.supervisor import Supervisor, split_bind

DEMO_APP = "bartizan.demo.wsgi:application"


class UserError(Exception):
    """A problem the user can fix; reported as one line, exit code 2."""


def _int_between(low: int, high: int | None, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], named in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            limit = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{text!r} must be {limit}")
        return value

    return parse


_positive_int = _int_between(1, None, "a whole number")
_port = _int_between(0, 65535, "a port number")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bartizan",
        description="Serve a WSGI application (a Django site, for one) from Rust.",
    )
    p.add_argument(
        "app",
        nargs="?",
        default=DEMO_APP,
        help="the app as MODULE:NAME (default: the bundled demo site, %(default)s)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on (%(default)s)")
    p.add_argument(
        "--bind",
        action="append",
        metavar="ADDR:PORT",
        help="listen here instead of --host/--port; repeatable, e.g. [::1]:8000",
    )
    p.add_argument(
        "--threads", type=_positive_int, default=20, help="most app threads (%(default)s)"
    )
    p.add_argument(
        "--min-threads",
        type=int,
        default=1,
        help="app threads kept when idle (%(default)s)",
    )
    p.add_argument(
        "--queue",
        type=_positive_int,
        default=1024,
        help="requests that may wait for a thread before 503 (%(default)s)",
    )
    p.add_argument("--root-path", default="", help="serve the app under this URL prefix")
    p.add_argument("--factory", action="store_true", help="MODULE:NAME is called to make the app")
    p.add_argument(
        "--max-body",
        type=_positive_int,
        default=1 << 30,
        help="largest request body in bytes; larger gets 413 (%(default)s)",
    )
    p.add_argument(
        "--io-threads",
        type=_positive_int,
        default=2,
        help="network threads (%(default)s)",
    )
    p.add_argument(
        "--static",
        action="append",
        default=[],
        metavar="PREFIX=DIR",
        help="serve DIR under URL PREFIX from Rust, e.g. /static=./static; repeatable",
    )
    p.add_argument(
        "--static-max-age",
        type=int,
        default=3600,
        help="Cache-Control max-age for static files without a content hash (%(default)s)",
    )
    p.add_argument(
        "--django",
        action="store_true",
        help="mount STATIC_ROOT/MEDIA_ROOT at STATIC_URL/MEDIA_URL (automatic for Django apps)",
    )
    p.add_argument(
        "--no-django-static",
        action="store_true",
        help="do not mount Django's static and media roots automatically",
    )
    p.add_argument(
        "--trusted-proxies",
        default="127.0.0.1,::1",
        metavar="IPS",
        help="comma-separated IPs/CIDRs whose X-Forwarded-*/Forwarded headers are believed;"
        " empty for none (%(default)s)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=_seconds,
        default=30.0,
        help="seconds in-flight requests get to finish on stop (%(default)s)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="worker processes sharing the port; SIGHUP reloads them (%(default)s)",
    )
    p.add_argument(
        "--reload",
        action="store_true",
        help="reload the workers when a .py file under the current directory changes",
    )
    p.add_argument(
        "--access-log",
        nargs="?",
        const="-",
        metavar="PATH",
        help="log each request (to PATH, or '-' for standard output); off by default",
    )
    p.add_argument(
        "--access-log-format",
        choices=["combined", "json"],
        default="combined",
        help="%(default)s: Combined Log Format plus the duration in microseconds",
    )
    p.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="serve Prometheus metrics for all workers at http://ADDR:PORT/metrics",
    )
    return p


def _where(exc: BaseException) -> str:
    """`file:line` of the innermost frame, so an import error points somewhere useful."""
    tb = traceback.extract_tb(exc.__traceback__)
    return f" ({tb[-1].filename}:{tb[-1].lineno})" if tb else ""


def load_app(spec: str, factory: bool = False) -> Callable:
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    if not module_name:
        raise UserError(f"app {spec!r}: expected MODULE:NAME")
    # Like `python -m`, the current directory is importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UserError(f"cannot import module {module_name!r}: no such module") from None
        raise UserError(
            f"error importing {module_name!r}: {type(e).__name__}: {e}{_where(e)}"
        ) from None
    except Exception as e:
        raise UserError(
            f"error importing {module_name!r}: {type(e).__name__}: {e}{_where(e)}"
        ) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        if not callable(obj):
            raise UserError(f"factory {spec!r} is not callable")
        try:
            obj = obj()
        except Exception as e:
            raise UserError(
                f"factory {spec!r} failed: {type(e).__name__}: {e}{_where(e)}"
            ) from None
    if not callable(obj):
        raise UserError(f"{spec!r} is not a WSGI application (not callable)")
    return obj


def parse_static(specs: list[str]) -> list[tuple[str, str]]:
    mounts = []
    for spec in specs:
        prefix, sep, directory = spec.partition("=")
        if not sep or not prefix.startswith("/") or not directory:
            raise UserError(f"--static {spec!r}: expected PREFIX=DIR, e.g. /static=./static")
        if not os.path.isdir(directory):
            raise UserError(f"--static {spec!r}: {directory!r} is not a directory")
        mounts.append((prefix, directory))
    return mounts


def django_mounts(required: bool) -> list[tuple[str, str]]:
    """STATIC_URL/STATIC_ROOT and MEDIA_URL/MEDIA_ROOT of the loaded Django project."""
    django_conf = sys.modules.get("django.conf")
    configured = django_conf is not None and django_conf.settings.configured
    if not configured:
        if required:
            raise UserError("--django: the app did not configure Django settings")
        return []
    settings = django_conf.settings
    mounts = []
    for url_name, root_name in (("STATIC_URL", "STATIC_ROOT"), ("MEDIA_URL", "MEDIA_ROOT")):
        url = getattr(settings, url_name, None) or ""
        root = getattr(settings, root_name, None)
        # Only local prefixes can be served here; a CDN URL is someone else's business.
        if not root or not url.startswith("/") or url == "/":
            continue
        root = os.fspath(root)
        if url_name == "MEDIA_URL":
            os.makedirs(root, exist_ok=True)
        if os.path.isdir(root):
            mounts.append((url.rstrip("/"), root))
    return mounts


def _fail(message: str) -> int:
    print(f"bartizan: {message}", file=sys.stderr, flush=True)
    return 2


def build_proxy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bartizan proxy",
        description="Reverse-proxy front: listen publicly, forward to app servers.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on (%(default)s)")
    p.add_argument("--bind", action="append", metavar="ADDR:PORT", help="listen here; repeatable")
    p.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="an app server; repeatable (round-robin with passive health checks)",
    )
    p.add_argument(
        "--upstream-wait",
        type=_seconds,
        default=30.0,
        help="seconds a request waits for an upstream to come back before 502 (%(default)s)",
    )
    p.add_argument("--connect-timeout", type=_seconds, default=5.0, help="(%(default)s)")
    p.add_argument(
        "--response-timeout",
        type=_seconds,
        default=60.0,
        help="seconds an upstream may take to send response headers; then 504 (%(default)s)",
    )
    p.add_argument("--certfile", help="PEM certificate chain: serve HTTPS")
    p.add_argument("--keyfile", help="PEM private key for --certfile")
    p.add_argument("--static", action="append", default=[], metavar="PREFIX=DIR")
    p.add_argument("--static-max-age", type=int, default=3600)
    p.add_argument("--io-threads", type=_positive_int, default=2)
    p.add_argument("--graceful-timeout", type=_seconds, default=30.0)
    return p


def proxy_main(argv: list[str]) -> int:
    args = build_proxy_parser().parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        return _fail("--certfile and --keyfile go together")
    for f in (args.certfile, args.keyfile):
        if f and not os.path.isfile(f):
            return _fail(f"{f!r} is not a file")
    try:
        mounts = parse_static(args.static)
    except UserError as e:
        return _fail(str(e))

    def announce(server: bartizan.Server) -> None:
        urls = ", ".join(server.urls)
        ups = ", ".join(args.upstream)
        print(f"bartizan: proxy listening on {urls} -> {ups}", file=sys.stderr, flush=True)

    try:
        bartizan.serve(
            None,
            host=args.host,
            port=args.port,
            bind=args.bind,
            upstreams=args.upstream,
            upstream_wait=args.upstream_wait,
            connect_timeout=args.connect_timeout,
            response_timeout=args.response_timeout,
            certfile=args.certfile,
            keyfile=args.keyfile,
            static=mounts,
            static_max_age=args.static_max_age,
            io_threads=args.io_threads,
            graceful_timeout=args.graceful_timeout,
            on_start=announce,
        )
    except ValueError as e:
        return _fail(str(e))
    except OSError as e:
        print(f"bartizan: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["proxy"]:
        return proxy_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.min_threads < 0 or args.min_threads > args.threads:
        return _fail(f"--min-threads must be between 0 and --threads ({args.threads})")
    try:
        mounts = parse_static(args.static)
    except UserError as e:
        return _fail(str(e))
    if args.metrics:
        try:
            split_bind(args.metrics)
        except ValueError:
            return _fail(f"--metrics {args.metrics!r}: expected ADDR:PORT")
    binds = args.bind or [bartizan.format_address(args.host, args.port)]
    for b in binds:
        try:
            split_bind(b)
        except ValueError:
            return _fail(f"--bind {b!r}: expected HOST:PORT, e.g. 0.0.0.0:8000 or [::1]:8000")
    worker_config = {
        "app": args.app,
        "factory": args.factory,
        "static": mounts,
        "django": "on" if args.django else "off" if args.no_django_static else "auto",
        "graceful_timeout": args.graceful_timeout,
        "threads": args.threads,
        "min_threads": args.min_threads,
        "queue": args.queue,
        "root_path": args.root_path,
        "max_body": args.max_body,
        "io_threads": args.io_threads,
        "static_max_age": args.static_max_age,
        "trusted_proxies": [t for t in args.trusted_proxies.split(",") if t.strip()],
        "access_log": args.access_log,
        "access_log_format": args.access_log_format,
    }
    return Supervisor(
        worker_config,
        binds,
        workers=args.workers,
        threads=args.threads,
        graceful_timeout=args.graceful_timeout,
        reload=args.reload,
        metrics=args.metrics,
    ).run()


if __name__ == "__main__":
    raise SystemExit(main())
