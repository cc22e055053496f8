"""`bartizan MODULE:APP [options]`: serve a WSGI app from the command line.

User mistakes (a bad option, an app that cannot be imported) end with one clear line and
exit code 2, never a traceback. The app itself is loaded and run in worker processes (see
supervisor.py and app.py).
"""

from __future__ import annotations

import argparse
import sys

import bartizan
from bartizan import options
from bartizan.supervisor import Supervisor

DEMO_APP = "bartizan.demo.wsgi:application"


def _show_default(option: options.Option) -> str:
    value = option.shown or option.default
    if option.switch or value in (None, "", []):
        return ""
    if isinstance(value, list):
        value = ",".join(value)
    return f" ({value})"


def _metavar(option: options.Option) -> str:
    if option.metavar:
        return option.metavar
    return {options.parse_integer: "N", options.parse_seconds: "S"}.get(option.parse, "TEXT")


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per option of the table that `command` takes, in the table's groups. Values
    stay text here: `read_options` parses and checks them, so a bad one is a single line."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in options.for_command(command):
        group = groups.get(option.group)
        if group is None:
            group = groups[option.group] = parser.add_argument_group(options.GROUPS[option.group])
        kwargs: dict = {"dest": option.name, "help": option.help + _show_default(option)}
        if option.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = _metavar(option)
            kwargs["action"] = "append" if option.many else "store"
            kwargs.update(option.extra)
        group.add_argument(option.flag, **kwargs)


def read_options(args: argparse.Namespace, command: str) -> dict:
    """Every option of `command`: parsed from its flag's text, else the table's default;
    checked. Raises OptionError naming the flag."""
    values = {}
    for option in options.for_command(command):
        given = getattr(args, option.name)
        if given is None or option.switch:
            value = option.default if given is None else given
        else:
            parsed = []
            for text in given if option.many else [given]:
                try:
                    parsed.append(option.parse(text))
                except ValueError as e:
                    raise options.OptionError(option, text, str(e), flag=True) from None
            value = parsed if option.many else parsed[0]
        values[option.name] = options.check_value(option, value, flag=True)
    options.check_together(values, flag=True)
    return values


class _Parser(argparse.ArgumentParser):
    """Usage mistakes (an unknown flag, a missing value) as one line, exit code 2."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bartizan",
        description="Serve a WSGI application (a Django site, for one) from Rust. "
        "`bartizan proxy --help` tells of the reverse-proxy front.",
    )
    p.add_argument(
        "app",
        nargs="?",
        default=DEMO_APP,
        help="the app as MODULE:NAME (default: the bundled demo site, %(default)s)",
    )
    add_options(p, options.SERVE)
    return p


def _fail(message: str) -> int:
    print(f"bartizan: {message}", file=sys.stderr, flush=True)
    return 2


def build_proxy_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bartizan proxy",
        description="Reverse-proxy front: listen publicly, forward to app servers.",
    )
    add_options(p, options.PROXY)
    return p


def _embedding(values: dict) -> dict:
    """The Server/Proxy keyword arguments among `values`."""
    return {k: v for k, v in values.items() if options.EMBED in options.BY_NAME[k].where}


def django_mode(values: dict) -> str:
    """The worker's `django` setting: "on" (--django: mount, or fail if Django is not
    configured), "off" (--no-django-static) or "auto" (mount if the app configured Django)."""
    if values["django"]:
        return "on"
    return "off" if values["no_django_static"] else "auto"


def worker_config(app: str, values: dict) -> dict:
    """What each worker process is started with (see worker.py), less what the supervisor
    adds: the sockets it listens on come from the supervisor, not host/port/bind."""
    config = {k: v for k, v in _embedding(values).items() if k not in ("host", "port", "bind")}
    config.update(
        app=app,
        factory=values["factory"],
        django=django_mode(values),
        graceful_timeout=values["graceful_timeout"],
    )
    return config


def proxy_main(argv: list[str]) -> int:
    args = build_proxy_parser().parse_args(argv)
    try:
        values = read_options(args, options.PROXY)
    except options.OptionError as e:
        return _fail(str(e))
    if not values["upstreams"]:
        return _fail("--upstream: at least one is needed, e.g. --upstream 127.0.0.1:8001")

    def announce(server: bartizan.Server) -> None:
        urls = ", ".join(server.urls)
        ups = ", ".join(values["upstreams"])
        routes = "".join(f"; {prefix} -> {up}" for prefix, up in values["routes"])
        print(f"bartizan: proxy listening on {urls} -> {ups}{routes}", file=sys.stderr, flush=True)

    try:
        bartizan.serve(
            None,
            graceful_timeout=values["graceful_timeout"],
            on_start=announce,
            **_embedding(values),
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
    try:
        values = read_options(args, options.SERVE)
    except options.OptionError as e:
        return _fail(str(e))
    binds = values["bind"] or [bartizan.format_address(values["host"], values["port"])]
    return Supervisor(
        worker_config(args.app, values),
        binds,
        workers=values["workers"],
        threads=values["threads"],
        graceful_timeout=values["graceful_timeout"],
        reload=values["reload"],
        metrics=values["metrics"],
    ).run()


if __name__ == "__main__":
    raise SystemExit(main())
