"""The options table (bartizan.options) and what is made from it: the command
line's flags, the Server keyword arguments and their checks. Pure logic, no
server; the end-to-end behaviour of the same errors is in test_cli_embed.py."""

import re

import pytest
from bartizan import cli, options
from bartizan.options import OPTIONS, OptionError


def parse(*argv, command=options.SERVE):
    parser = cli.build_parser() if command == options.SERVE else cli.build_proxy_parser()
    return cli.read_options(parser.parse_args(list(argv)), command)


def test_every_option_is_documented_and_grouped():
    flags = [o.flag for o in OPTIONS]
    assert len(flags) == len(set(flags)), "two options share a flag"
    for option in OPTIONS:
        assert option.help and not option.help.endswith("."), option.name
        assert option.group in options.GROUPS, option.name
        assert option.where, option.name


def test_the_command_lines_take_exactly_the_tables_options():
    for command, parser in (
        (options.SERVE, cli.build_parser()),
        (options.PROXY, cli.build_proxy_parser()),
    ):
        flags = {s for a in parser._actions for s in a.option_strings}
        flags -= {"-h", "--help", "--version"}
        table = options.for_command(command)
        assert flags == {o.flag for o in table} | {o.short for o in table if o.short}


def test_defaults_come_from_the_table():
    values = parse()
    for option in options.for_command(options.SERVE):
        assert values[option.name] == option.default, option.name


def test_values_are_parsed_to_their_types():
    values = parse(
        "--threads",
        "8",
        "--port",
        "0",
        "--bind",
        "[::1]:9000",
        "--bind",
        "127.0.0.1:9001",
        "--trusted-proxies",
        "10.0.0.0/8, ::1",
        "--graceful-timeout",
        "2.5",
        "--reload",
    )
    assert values["threads"] == 8
    assert values["port"] == 0
    assert values["bind"] == ["[::1]:9000", "127.0.0.1:9001"]
    assert values["trusted_proxies"] == ["10.0.0.0/8", "::1"]
    assert values["graceful_timeout"] == 2.5
    assert values["reload"] is True


def test_static_mounts_are_checked(tmp_path):
    assert parse("--static", f"/s={tmp_path}")["static"] == [("/s", str(tmp_path))]
    with pytest.raises(OptionError, match="is not a directory"):
        parse("--static", f"/s={tmp_path / 'missing'}")
    with pytest.raises(OptionError, match="PREFIX=DIR"):
        parse("--static", "nodir")
    with pytest.raises(OptionError, match="must start with /"):
        parse("--static", f"s={tmp_path}")


BAD = [
    (["--threads", "abc"], "--threads 'abc': not a whole number"),
    (["--threads", "0"], "--threads 0: must be between 1 and 1024"),
    (["--threads", "5000"], "--threads 5000: must be between 1 and 1024"),
    (["--io-threads", "65"], "--io-threads 65: must be between 1 and 64"),
    (["--root-path", "blog"], "--root-path 'blog': must start with /"),
    (["--port", "70000"], "--port 70000: must be between 0 and 65535"),
    (["--graceful-timeout", "-1"], "--graceful-timeout -1.0: must be a finite number"),
    (["--header-timeout", "0"], "--header-timeout 0.0: must be more than 0 seconds"),
    (["--bind", "localhost"], "--bind 'localhost': expected HOST:PORT"),
    (["--metrics", "9100"], "--metrics '9100': expected HOST:PORT"),
    (["--threads", "2", "--min-threads", "3"], "--min-threads 3: must not be more than threads"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[b[0][0] for b in BAD])
def test_a_bad_value_names_the_flag(argv, message):
    with pytest.raises(OptionError) as caught:
        parse(*argv)
    assert str(caught.value).startswith(message)


def test_proxy_options(tmp_path):
    values = parse("--upstream", "127.0.0.1:8001", "--upstream-wait", "0", command=options.PROXY)
    assert values["upstreams"] == ["127.0.0.1:8001"]
    assert values["upstream_wait"] == 0.0
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(OptionError, match=r"--certfile .*: needs --keyfile"):
        parse("--upstream", "127.0.0.1:1", "--certfile", str(cert), command=options.PROXY)


def test_routes_are_prefix_and_address():
    values = parse(
        "--upstream", "127.0.0.1:1", "--route", "/ajax=127.0.0.1:2", command=options.PROXY
    )
    assert values["routes"] == [("/ajax", "127.0.0.1:2")]
    # The app server takes routes too.
    assert parse("--route", "/side=[::1]:3")["routes"] == [("/side", "[::1]:3")]
    for bad, message in (
        ("nothing", "expected PREFIX=HOST:PORT"),
        ("ajax=127.0.0.1:2", "must be a path under /"),
        ("/=127.0.0.1:2", "must be a path under /"),
        ("/a?b=127.0.0.1:2", "plain path"),
        ("/ajax=localhost", "expected HOST:PORT"),
    ):
        with pytest.raises(OptionError, match=re.escape(message)) as caught:
            parse("--route", bad)
        assert str(caught.value).startswith("--route ")
    given = options.embed_options({"routes": {"/a": "127.0.0.1:2"}})
    assert given["routes"] == [("/a", "127.0.0.1:2")]
    given = options.embed_options({"routes": ["/a=127.0.0.1:2", ("/b", "127.0.0.1:3")]})
    assert given["routes"] == [("/a", "127.0.0.1:2"), ("/b", "127.0.0.1:3")]
    with pytest.raises(OptionError, match=r"^routes=\('/a', ''\)"):
        options.embed_options({"routes": ["/a"]})


def test_embedding_keywords_are_checked_in_their_own_words():
    values = options.embed_options({"threads": 4, "static": {"/s": "."}})
    assert values["threads"] == 4
    assert values["static"] == [("/s", ".")]
    assert values["queue"] == options.BY_NAME["queue"].default
    with pytest.raises(OptionError) as caught:
        options.embed_options({"threads": 0})
    assert str(caught.value) == "threads=0: must be between 1 and 1024"
    with pytest.raises(TypeError, match="'thread'"):
        options.embed_options({"thread": 4})
    # Command-line-only options are not keywords.
    with pytest.raises(TypeError, match="'workers'"):
        options.embed_options({"workers": 2})


def test_a_string_of_trusted_proxies_is_split_not_iterated():
    values = options.embed_options({"trusted_proxies": "10.0.0.1,::1"})
    assert values["trusted_proxies"] == ["10.0.0.1", "::1"]
