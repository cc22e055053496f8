"""The command line beyond the options table (that is test_options.py): the positional app,
the switches, the flag whose value is optional, what a worker is started with, and the
mistakes `main` reports in one line before any process starts. No server is started."""

import pytest
from bartizan import cli, options
from bartizan.protocol import WorkerConfig


@pytest.fixture(autouse=True)
def no_supervisor(monkeypatch):
    """A test that gets as far as starting worker processes has already failed."""

    def refuse(*args, **kwargs):
        raise AssertionError("main() went on to start a supervisor")

    monkeypatch.setattr(cli, "Supervisor", refuse)


def serve_args(*argv):
    args = cli.build_parser().parse_args(list(argv))
    return args, cli.read_options(args, options.SERVE)


def proxy_values(*argv):
    return cli.read_options(cli.build_proxy_parser().parse_args(list(argv)), options.PROXY)


def test_the_app_defaults_to_the_demo_site(monkeypatch):
    monkeypatch.delenv("BARTIZAN_APP", raising=False)
    args = cli.build_parser().parse_args([])
    assert cli.gather(args, options.SERVE)["app"] == "bartizan.demo.wsgi:application"
    args = cli.build_parser().parse_args(["mysite.wsgi:application", "--threads", "4"])
    assert cli.gather(args, options.SERVE)["app"] == "mysite.wsgi:application"


@pytest.mark.parametrize("switch", ["reload", "factory", "django", "no_django_static"])
def test_a_switch_is_off_unless_given(switch):
    flag = options.BY_NAME[switch].flag
    assert serve_args()[1][switch] is False
    assert serve_args("m:app", flag)[1][switch] is True


def test_a_switch_takes_no_value():
    # The word after a switch is the app, not the switch's value.
    args, values = serve_args("--reload", "m:app")
    assert (args.app, values["reload"]) == ("m:app", True)


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], None),
        (["--access-log"], "-"),
        (["--access-log", "-"], "-"),
        (["--access-log=/var/log/b.log"], "/var/log/b.log"),
        (["--access-log", "--reload"], "-"),
    ],
    ids=["off", "bare", "dash", "path", "bare-before-a-flag"],
)
def test_access_log_value_is_optional(argv, expected):
    args, values = serve_args("m:app", *argv)
    assert values["access_log"] == expected
    assert args.app == "m:app"


@pytest.mark.parametrize(
    "flags,mode",
    [
        ([], "auto"),
        (["--django"], "on"),
        (["--no-django-static"], "off"),
        (["--django", "--no-django-static"], "on"),
    ],
)
def test_django_flags_become_the_workers_mode(flags, mode):
    assert cli.django_mode(serve_args(*flags)[1]) == mode


def test_worker_config_is_the_embedding_options_less_where_to_listen(tmp_path):
    args, values = serve_args(
        "m:app",
        "--bind",
        "127.0.0.1:9000",
        "--port",
        "9001",
        "--threads",
        "3",
        "--static",
        f"/s={tmp_path}",
        "--factory",
        "--no-django-static",
        "--graceful-timeout",
        "4",
        "--workers",
        "2",
        "--reload",
        "--metrics",
        "127.0.0.1:9100",
    )
    server = {
        "threads": 3,
        "min_threads": 1,
        "queue": 1024,
        "root_path": "",
        "retry_after": 1,
        "max_body": 1 << 30,
        "body_timeout": 60.0,
        "header_timeout": 60.0,
        "keep_alive": 75.0,
        "request_timeout": 0.0,
        "limit_request_line": 8190,
        "limit_request_field_size": 8190,
        "limit_request_fields": 100,
        "health_path": None,
        "max_head": 65536,
        "max_connections": 1000,
        "http2_max_streams": 100,
        "io_threads": 2,
        "static": [("/s", str(tmp_path))],
        "static_max_age": 3600,
        "trusted_proxies": ["127.0.0.1", "::1"],
        "routes": [],
        "upstream_wait": 30.0,
        "connect_timeout": 5.0,
        "https": [],
        "acme_directory": "https://acme-v02.api.letsencrypt.org/directory",
        "acme_ca": None,
        "acme_email": None,
        "state_dir": None,
        "acme_renew_at": 2 / 3,
        "http_redirect": [],
        "hsts": 0,
        "certfile": None,
        "keyfile": None,
        "response_timeout": 60.0,
        "media": [],
        "access_log": None,
        "access_log_format": "combined",
    }
    assert cli.worker_config(args.app, values) == WorkerConfig(
        app="m:app",
        factory=True,
        django="off",
        graceful_timeout=4.0,
        pythonpath=[],
        log_level="info",
        check=False,
        recycle={"max_requests": 0, "max_requests_jitter": 0, "max_rss": 0, "stuck_limit": 0},
        server=server,
    )


def test_the_proxy_parser_takes_its_own_options():
    values = proxy_values(
        "--upstream",
        "127.0.0.1:8001",
        "--upstream",
        "[::1]:8002",
        "--bind",
        "0.0.0.0:4001",
        "--connect-timeout",
        "1.5",
        "--graceful-timeout",
        "3",
    )
    assert values["upstreams"] == ["127.0.0.1:8001", "[::1]:8002"]
    assert values["bind"] == ["0.0.0.0:4001"]
    assert values["connect_timeout"] == 1.5
    assert values["graceful_timeout"] == 3.0
    assert values["response_timeout"] == 60.0
    assert cli._embedding(values).keys() == {
        o.name for o in options.OPTIONS if o.where >= {options.PROXY, options.EMBED}
    }


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--workers", "2"], "unrecognized arguments: --workers 2"),
        (["m:app"], "unrecognized arguments: m:app"),
        (["--upstream"], "argument --upstream: expected one argument"),
    ],
)
def test_the_proxy_parser_refuses_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as caught:
        cli.build_proxy_parser().parse_args(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err == (f"bartizan proxy: {message} (see bartizan proxy --help)\n")


def test_an_unknown_flag_is_one_line_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["m:app", "--nope", "4"])
    assert caught.value.code == 2
    assert capsys.readouterr().err == (
        "bartizan: unrecognized arguments: --nope 4 (see bartizan --help)\n"
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["m:app", "--workers", "0"], "--workers 0: must be at least 1"),
        (
            ["m:app", "--access-log-format", "json", "--min-threads", "30"],
            "--min-threads 30: must not be more than threads (20)",
        ),
        (["proxy"], "--upstream: at least one is needed, e.g. --upstream 127.0.0.1:8001"),
        (
            ["proxy", "--upstream", "x"],
            "--upstream 'x': expected HOST:PORT, e.g. 0.0.0.0:8000 or [::1]:8000",
        ),
    ],
    ids=["serve-value", "serve-together", "proxy-no-upstream", "proxy-value"],
)
def test_main_reports_a_bad_value_before_starting_anything(capsys, argv, message):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"bartizan: {message}\n"
