"""The command line as a new user meets it: the flags people bring from other servers, options
from the environment and a config file, a start that says what it serves, errors that point at
the failing line, stopping, reloads of a broken deploy, and the media rule. Each test runs
`python -m bartizan` as a user would and reads its output and exit code."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
import threading
import time

import pytest

from tests.support import raw_request
from tests.support.process import PYTHON, ROOT, ServerProcess

ECHO = "tests.apps.echo:app"


def run(server, *args, env=None, cwd=ROOT, timeout=30):
    """A command expected to exit: (exit code, stderr)."""
    return server(*args, wait=False, env=env, cwd=cwd).outcome(timeout)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


def django_project(root, settings_extra="", views="", urls_extra=""):
    """A minimal Django project in `root`: `mysite/settings.py`, `mysite/urls.py`,
    `mysite/views.py`, `mysite/wsgi.py`; served as mysite.wsgi:application from `root`."""
    pkg = root / "mysite"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "settings.py").write_text(
        textwrap.dedent(
            """\
            import os
            from pathlib import Path
            BASE = Path(__file__).resolve().parent.parent
            SECRET_KEY = "test"
            DEBUG = False
            ALLOWED_HOSTS = ["*"]
            ROOT_URLCONF = "mysite.urls"
            INSTALLED_APPS = ["django.contrib.staticfiles"]
            STATIC_URL = "/static/"
            STATIC_ROOT = BASE / "collected"
            MEDIA_URL = "/media/"
            MEDIA_ROOT = BASE / "uploads"
            """
        )
        + settings_extra
    )
    (pkg / "views.py").write_text(
        views
        or textwrap.dedent(
            """\
            from django.http import HttpResponse


            def home(request):
                return HttpResponse("home")
            """
        )
    )
    (pkg / "urls.py").write_text(
        "from django.urls import path\n\nfrom . import views\n\n"
        'urlpatterns = [path("", views.home)]\n' + urls_extra
    )
    (pkg / "wsgi.py").write_text(
        "import os\n\n"
        'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")\n'
        "from django.core.wsgi import get_wsgi_application\n\n"
        "application = get_wsgi_application()\n"
    )
    return "mysite.wsgi:application"


# --- flags people bring ------------------------------------------------------------------


def test_a_bare_access_log_never_swallows_the_app(server, tmp_path):
    """`--access-log APP`: the app is the app (not the bundled demo) and the log goes to
    standard output, not to a file named after the app."""
    proc = server("--access-log", ECHO, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert proc.stderr_match(re.compile(rf"serving {ECHO}$"), 10)
    r = raw_request(proc.port, "GET", "/logged")
    assert r.json()["environ"]["PATH_INFO"] == "/logged"
    deadline = time.monotonic() + 10
    while "/logged" not in proc.stdout_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "GET /logged" in proc.stdout_text()
    assert list(tmp_path.iterdir()) == []


def test_short_flags(server):
    proc = server("-b", "127.0.0.1:0", "-t", "3", "-w", "1", ECHO)
    assert proc.threads == 3
    assert raw_request(proc.port, "GET", "/").status == 200


def bartizan_says(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "bartizan", *args], capture_output=True, text=True, timeout=30, cwd=ROOT
    )


def test_version_prints_the_version():
    done = bartizan_says("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("bartizan 0.")


def test_help_names_the_proxy_command_and_reads_like_a_person_wrote_it():
    done = bartizan_says("--help")
    assert done.returncode == 0
    assert "bartizan proxy" in done.stdout
    assert "(1 GiB)" in done.stdout and "1073741824" not in done.stdout
    assert "BARTIZAN_<NAME>" in done.stdout


# --- where options come from -------------------------------------------------------------


def test_environment_and_config_file_with_flag_first(server, tmp_path):
    """flag > BARTIZAN_* > bartizan.toml > default; PORT as platforms set it."""
    (tmp_path / "bartizan.toml").write_text('app = "tests.apps.echo:app"\nthreads = 6\n')
    env = {"PYTHONPATH": str(ROOT)}
    assert server(cwd=tmp_path, env=env).threads == 6
    assert server(cwd=tmp_path, env={**env, "BARTIZAN_THREADS": "5"}).threads == 5
    assert server("--threads", "4", cwd=tmp_path, env={**env, "BARTIZAN_THREADS": "5"}).threads == 4
    proc = ServerProcess([ECHO], env={"PORT": "0"})
    try:
        proc.wait_started()
        assert proc.port > 0
    finally:
        proc.stop()


def test_pyproject_tool_table(server, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.bartizan]\napp = "tests.apps.echo:app"\n'
        "min-threads = 2\nthreads = 7\n"
    )
    assert server(cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}).threads == 7


@pytest.mark.parametrize(
    "env,files,expected",
    [
        ({"BARTIZAN_THREADS": "0"}, {}, "bartizan: BARTIZAN_THREADS 0: must be between 1 and 1024"),
        ({"WEB_CONCURRENCY": "many"}, {}, "bartizan: WEB_CONCURRENCY 'many': not a whole number"),
        ({}, {"bartizan.toml": "threads = 0\n"}, "bartizan: bartizan.toml: threads 0: must be"),
        ({}, {"bartizan.toml": "colour = 'red'\n"}, "bartizan: bartizan.toml: unknown option"),
        ({}, {"bartizan.toml": "threads = \n"}, "bartizan: bartizan.toml: not valid TOML"),
    ],
    ids=["env", "platform-env", "file-value", "file-key", "file-syntax"],
)
def test_a_bad_value_from_env_or_file_is_one_line(server, tmp_path, env, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code, err = run(server, ECHO, env={"PYTHONPATH": str(ROOT), **env}, cwd=tmp_path)
    assert code == 2
    assert one_line(err).startswith(expected)


def test_chdir_and_pythonpath(server, tmp_path):
    app_dir = tmp_path / "proj"
    app_dir.mkdir()
    (app_dir / "hello_app.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'from the other directory']\n"
    )
    proc = server("--chdir", str(app_dir), "hello_app:app", cwd=ROOT)
    assert raw_request(proc.port, "GET", "/").body == b"from the other directory"
    proc = server("--pythonpath", str(app_dir), "hello_app:app", cwd=ROOT)
    assert raw_request(proc.port, "GET", "/").body == b"from the other directory"


# --- what it says at start ---------------------------------------------------------------


def test_start_names_the_demo_and_its_static_files(server, tmp_path):
    proc = server(env={"BARTIZAN_DEMO_DB": str(tmp_path / "db.sqlite3")})
    assert proc.stderr_match(
        re.compile(r"serving the bundled demo site \(bartizan\.demo\.wsgi:application\)$"), 30
    )
    assert proc.stderr_match(re.compile(r"static /static/ from \S+ \(\d+ files\)$"), 10)


def test_missing_static_root_is_warned_by_name(server, tmp_path):
    app = django_project(tmp_path)
    proc = server(app, cwd=tmp_path)
    assert proc.stderr_match(re.compile(r"warning: STATIC_ROOT \S+collected does not exist"), 10)
    (tmp_path / "collected").mkdir()
    proc = server(app, cwd=tmp_path)
    assert proc.stderr_match(re.compile(r"warning: STATIC_ROOT \S+collected is empty"), 10)
    (tmp_path / "collected" / "a.css").write_text("a{}")
    proc = server(app, cwd=tmp_path)
    assert proc.stderr_match(re.compile(r"static /static/ from \S+collected \(1 file\)$"), 10)
    assert "warning" not in proc.stderr_text()


# --- errors ------------------------------------------------------------------------------


def test_import_error_names_the_users_file_and_line(server, tmp_path):
    app = django_project(tmp_path, settings_extra='SECRET_KEY = os.environ["NO_SUCH_SECRET_X"]\n')
    code, err = run(server, app, cwd=tmp_path)
    assert code == 2
    line = one_line(err)
    assert "KeyError: 'NO_SUCH_SECRET_X'" in line
    assert "mysite/settings.py:13)" in line, line
    code, err = run(server, app, "--log-level", "debug", cwd=tmp_path)
    assert code == 2
    assert "Traceback (most recent call last)" in err


def test_module_not_found_points_at_the_directory(server, tmp_path):
    code, err = run(server, "mysite.wsgi:application", cwd=tmp_path)
    assert code == 2
    line = one_line(err)
    assert str(tmp_path) in line and "--chdir" in line


def test_address_in_use_is_a_user_error(server):
    first = server(ECHO)
    code, err = run(server, ECHO, "--bind", f"127.0.0.1:{first.port}")
    assert code == 2
    assert "in use" in one_line(err).lower()


def test_unknown_host_is_a_user_error(server):
    code, err = run(server, ECHO, "--bind", "no-such-host.invalid:8000")
    assert code == 2
    assert "no-such-host.invalid" in one_line(err)


# --- stopping ----------------------------------------------------------------------------


def test_ctrl_c_says_what_it_waits_for_and_a_forced_stop_is_not_success(server):
    proc = server("tests.apps.lifecycle:app", "--graceful-timeout", "30")
    outcome = []

    def slow_request():
        try:
            outcome.append(raw_request(proc.port, "GET", "/sleep?s=20", timeout=40).status)
        except Exception as e:  # the connection cut under it, whichever way it shows
            outcome.append(type(e).__name__)

    t = threading.Thread(target=slow_request, daemon=True)
    t.start()
    time.sleep(1.0)
    proc.signal(signal.SIGINT)
    assert proc.stderr_match(
        re.compile(r"stopping: in-flight requests get up to 30 s to finish"), 5
    )
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(timeout=15) == 1
    t.join(10)
    assert outcome and outcome[0] != 200, f"the request in flight was not cut: {outcome}"


# --- reloads of a broken deploy ------------------------------------------------------------


def test_sighup_with_a_broken_urlconf_keeps_the_old_workers(server, tmp_path):
    app = django_project(tmp_path)
    (tmp_path / "collected").mkdir()
    proc = server(app, cwd=tmp_path)
    assert raw_request(proc.port, "GET", "/").body == b"home"
    (tmp_path / "mysite" / "views.py").write_text("def home(request)\n    return None\n")
    proc.signal(signal.SIGHUP)
    assert proc.stderr_match(re.compile(r"reload failed"), 30)
    assert proc.stderr_match(re.compile(r"views\.py"), 5)
    for _ in range(5):
        r = raw_request(proc.port, "GET", "/")
        assert (r.status, r.body) == (200, b"home")


# --- media -------------------------------------------------------------------------------

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def test_uploaded_svg_is_sandboxed_and_nothing_is_sniffed(server, tmp_path):
    app = django_project(tmp_path)
    (tmp_path / "collected").mkdir()
    (tmp_path / "collected" / "logo.svg").write_bytes(SVG)
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "evil.svg").write_bytes(SVG)
    (tmp_path / "uploads" / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    proc = server(app, cwd=tmp_path)
    media = raw_request(proc.port, "GET", "/media/evil.svg")
    assert media.status == 200 and media.body == SVG
    assert media.header("Content-Security-Policy") == "sandbox"
    assert media.header("X-Content-Type-Options") == "nosniff"
    photo = raw_request(proc.port, "GET", "/media/photo.png")
    assert photo.header("X-Content-Type-Options") == "nosniff"
    assert photo.header("Content-Security-Policy") is None
    static = raw_request(proc.port, "GET", "/static/logo.svg")
    assert static.header("X-Content-Type-Options") == "nosniff"
    assert static.header("Content-Security-Policy") is None


def test_response_header_values_are_trimmed(server, tmp_path):
    (tmp_path / "spaced.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Set-Cookie', '  a=1; Path=/ '), ('X-Tab', '\\tv')])\n"
        "    return [b'ok']\n"
    )
    proc = server("spaced:app", cwd=tmp_path)
    r = raw_request(proc.port, "GET", "/")
    assert r.header("Set-Cookie") == "a=1; Path=/"
    assert r.header("X-Tab") == "v"
    assert b"Set-Cookie: a=1; Path=/\r\n" in r.raw_head


# --- one log ---------------------------------------------------------------------------

BURST_APP = """
import os
import sys


def app(environ, start_response):
    # One write per line: print() writes the newline apart, so threads of one process could
    # interleave their own lines; this test is about the processes.
    for i in range(200):
        sys.stderr.write(f"burst {os.getpid()} {i} " + "x" * 300 + " end\\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def test_two_workers_bursting_never_merge_lines_and_every_line_is_stamped(cli, tmp_path):
    """Two workers each print 200 long lines per request at once: every line the server
    writes is whole (one burst line, or one of its own) and carries the log's timestamp and
    level, the supervisor's and the workers' alike."""
    (tmp_path / "burst_app.py").write_text(BURST_APP)
    srv = cli("burst_app:app", "--workers", "2", cwd=tmp_path)
    threads = [
        threading.Thread(target=lambda: raw_request(srv.port, "GET", "/", timeout=30))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(timeout=30) == 0
    raw = srv.stderr_raw_lines()
    stamped = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z +(INFO|WARN|ERROR|DEBUG) ")
    bursts = 0
    for line in raw:
        assert stamped.match(line), f"a line without the log's stamp: {line!r}"
        text = stamped.sub("", line)
        if text.startswith("burst "):
            assert re.fullmatch(r"burst \d+ \d+ x{300} end", text), f"merged: {text!r}"
            bursts += 1
        else:
            assert text.startswith("bartizan: "), f"an unexpected line: {text!r}"
    assert bursts == 8 * 200


def test_check_runs_djangos_system_checks_before_serving(server, tmp_path):
    """--check: a project whose checks fail (STATICFILES_DIRS holding STATIC_ROOT) does not
    start, with the check's message in one line; without --check it serves."""
    app = django_project(tmp_path, settings_extra="STATICFILES_DIRS = [STATIC_ROOT]\n")
    (tmp_path / "collected").mkdir()
    (tmp_path / "collected" / "a.css").write_text("a{}")
    code, err = run(server, app, "--check", cwd=tmp_path)
    assert code == 2
    assert "Django's system checks failed" in one_line(err)
    assert "staticfiles.E002" in err
    assert raw_request(server(app, cwd=tmp_path).port, "GET", "/").body == b"home"


def test_the_demo_has_a_favicon_and_its_echo_page_links_home(server, tmp_path):
    proc = server(env={"BARTIZAN_DEMO_DB": str(tmp_path / "db.sqlite3")})
    r = raw_request(proc.port, "GET", "/favicon.ico")
    assert r.status == 301
    icon = raw_request(proc.port, "GET", r.header("Location"))
    assert icon.status == 200 and icon.header("Content-Type").startswith("image/svg+xml")
    page = raw_request(proc.port, "GET", "/echo/", [("Accept", "text/html")])
    assert page.status == 200
    assert b'href="/"' in page.body and b'"path": "/echo/"' in page.body.replace(b"&quot;", b'"')
    assert raw_request(proc.port, "GET", "/echo/").json()["path"] == "/echo/"
