"""`bartizan MODULE:APP [options]`: serve a WSGI app from the command line.

User mistakes (a bad option, an app that cannot be imported) end with one clear line and
exit code 2, never a traceback. The app itself is loaded and run in worker processes (see
supervisor.py and app.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import bartizan
from bartizan import logs, options, sources
from bartizan.protocol import WorkerConfig
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
        names = [option.short, option.flag] if option.short else [option.flag]
        group.add_argument(*names, **kwargs)


def given_flags(args: argparse.Namespace, command: str) -> dict:
    """The parsed value of every flag given on the command line, by option name."""
    flags = {}
    for option in options.for_command(command):
        given = getattr(args, option.name)
        if given is None or (option.switch and not given):
            continue
        if option.switch:
            flags[option.name] = True
            continue
        parsed = []
        for text in given if option.many else [given]:
            try:
                parsed.append(option.parse(text))
            except ValueError as e:
                raise options.OptionError(option, text, str(e), flag=True) from None
        flags[option.name] = parsed if option.many else parsed[0]
    return flags


def read_options(
    args: argparse.Namespace,
    command: str,
    environ: Mapping[str, str] | None = None,
    config: sources.ConfigFile | None = None,
) -> dict:
    """Every option of `command`: from its flag, else the environment, else the config file,
    else the table's default; checked. Raises OptionError naming where the value came from."""
    return sources.resolve(
        command,
        given_flags(args, command),
        environ or {},
        config or sources.ConfigFile(None, {}),
    )


class _Parser(argparse.ArgumentParser):
    """Usage mistakes (an unknown flag, a missing value) as one line, exit code 2. A flag
    whose value is optional (--access-log) takes one only as --flag=VALUE, so it can never
    swallow the app that follows it."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        raise SystemExit(2)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        optional = {
            o.flag: o.extra["const"] for o in options.OPTIONS if o.extra.get("nargs") == "?"
        }
        out = []
        for i, a in enumerate(args):
            if a in optional:
                # `-` can never be an app: `--access-log -` keeps its usual meaning.
                if i + 1 < len(args) and args[i + 1] == "-":
                    continue
                a = f"{a}={optional[a]}"
            elif a == "-" and i > 0 and args[i - 1] in optional:
                a = f"{args[i - 1]}=-"
            out.append(a)
        return super().parse_known_args(out, namespace)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"bartizan {version('bartizan')}"
    except PackageNotFoundError:
        return "bartizan (version unknown)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bartizan",
        description="Serve a WSGI application (a Django site, for one) from Rust. "
        "Every option can also be set as BARTIZAN_<NAME> in the environment or in "
        "bartizan.toml / [tool.bartizan] of pyproject.toml; a flag wins over the environment, "
        "which wins over the file.",
        epilog="bartizan proxy [options]: the reverse-proxy front (see bartizan proxy --help).",
    )
    p.add_argument(
        "app",
        nargs="?",
        default=None,
        help=f"the app as MODULE:NAME (default: the bundled demo site, {DEMO_APP})",
    )
    p.add_argument("--version", action="version", version=_version())
    add_options(p, options.SERVE)
    return p


def _fail(message: str) -> int:
    print(f"bartizan: {message}", file=sys.stderr, flush=True)
    return 2


def build_proxy_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bartizan proxy",
        description="Reverse-proxy front: listen publicly, forward to app servers. Options "
        "also come from BARTIZAN_<NAME> and the config file, as for bartizan.",
    )
    p.add_argument("--version", action="version", version=_version())
    add_options(p, options.PROXY)
    return p


def _embedding(values: dict) -> dict:
    """The Server/Proxy keyword arguments among `values`."""
    return {
        k: v
        for k, v in values.items()
        if k in options.BY_NAME and options.EMBED in options.BY_NAME[k].where
    }


def django_mode(values: dict) -> str:
    """The worker's `django` setting: "on" (--django: mount, or fail if Django is not
    configured), "off" (--no-django-static) or "auto" (mount if the app configured Django)."""
    if values["django"]:
        return "on"
    return "off" if values["no_django_static"] else "auto"


def worker_config(app: str, values: dict) -> WorkerConfig:
    """What each worker process is started with, less what the supervisor adds: the sockets
    it listens on come from the supervisor, not host/port/bind."""
    return WorkerConfig(
        app=app,
        factory=values["factory"],
        django=django_mode(values),
        graceful_timeout=values["graceful_timeout"],
        pythonpath=[os.path.abspath(p) for p in values["pythonpath"]],
        log_level=values["log_level"],
        check=values["check"],
        recycle={
            "max_requests": values["max_requests"],
            "max_requests_jitter": values["max_requests_jitter"],
            "max_rss": values["max_rss"],
            "stuck_limit": values["stuck_limit"],
        },
        server={k: v for k, v in _embedding(values).items() if k not in ("host", "port", "bind")},
    )


def inherited_sockets(values: dict) -> list[int]:
    """The listening sockets handed to this process: --fd, or systemd's socket activation
    (LISTEN_FDS sockets from descriptor 3 on, meant for this process by LISTEN_PID)."""
    if values["fds"]:
        return values["fds"]
    count, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    if not count or not count.isdigit() or pid != str(os.getpid()):
        return []
    # Not for the workers: they are handed the sockets by number.
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return list(range(3, 3 + int(count)))


def gather(args: argparse.Namespace, command: str) -> dict:
    """Every option from its sources, after moving to --chdir (the config file and the app
    are looked for there). Raises OptionError or UserConfigError."""
    # These two say where the others are read, so they come from a flag or the environment.
    # The directory first: the config file's path is relative to it.
    flags, nowhere = given_flags(args, command), sources.ConfigFile(None, {})
    chdir = sources.resolve(command, flags, os.environ, nowhere, only={"chdir"})["chdir"]
    if chdir:
        os.chdir(chdir)
    config_path = sources.resolve(command, flags, os.environ, nowhere, only={"config"})["config"]
    config = sources.ConfigFile.find(config_path)
    values = read_options(args, command, os.environ, config)
    values["app"] = (
        getattr(args, "app", None)
        or os.environ.get("BARTIZAN_APP")
        or config.values.get("app")
        or (DEMO_APP if command == options.SERVE else None)
    )
    # The Rust side reads its log filter from here (tracing says warn, not warning).
    os.environ.setdefault("BARTIZAN_LOG", values["log_level"].replace("warning", "warn"))
    return values


def proxy_main(argv: list[str]) -> int:
    args = build_proxy_parser().parse_args(argv)
    try:
        values = gather(args, options.PROXY)
    except (options.OptionError, sources.UserConfigError) as e:
        return _fail(str(e))
    if not values["upstreams"]:
        return _fail("--upstream: at least one is needed, e.g. --upstream 127.0.0.1:8001")

    def announce(server: bartizan.Server) -> None:
        urls = ", ".join(server.urls)
        ups = ", ".join(values["upstreams"])
        routes = "".join(f"; {prefix} -> {up}" for prefix, up in values["routes"])
        logs.log(f"proxy listening on {urls} -> {ups}{routes}")

    try:
        cut = bartizan.serve(
            None,
            graceful_timeout=values["graceful_timeout"],
            on_start=announce,
            listen_fds=inherited_sockets(values),
            **_embedding(values),
        )
    except ValueError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(str(e))
    return 1 if cut else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["proxy"]:
        return proxy_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        values = gather(args, options.SERVE)
    except (options.OptionError, sources.UserConfigError) as e:
        return _fail(str(e))
    app = values["app"]
    fds = inherited_sockets(values)
    binds = values["bind"] or (
        [] if fds else [bartizan.format_address(values["host"], values["port"])]
    )
    return Supervisor(
        worker_config(app, values),
        binds,
        fds=fds,
        workers=values["workers"],
        threads=values["threads"],
        graceful_timeout=values["graceful_timeout"],
        reload=values["reload"],
        metrics=values["metrics"],
        demo=app == DEMO_APP,
    ).run()


if __name__ == "__main__":
    raise SystemExit(main())
