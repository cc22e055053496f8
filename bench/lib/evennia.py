"""The `evennia` section: one fresh Evennia game served by its stock Twisted web stack and
one with the two lines that put it on Bartizan, measured through the public port in the same
run: the front page, a static file and the login POST (wrk: rps, p99), then a reload under
load (client threads count failed and empty answers and the longest wait). The games are
made and driven by tests/support/evennia_game.py, as the tests do."""

import re
import time

from lib import log
from lib.config import Load, seconds
from lib.processes import RssSampler, scratch
from lib.results import Row, median_row, with_errors
from lib.wrk import run_wrk

from tests.support import evennia_game

GAMES = {"evennia-bartizan": "Evennia on Bartizan", "evennia-twisted": "Evennia (Twisted)"}
PAGES = {
    "evennia-page": "/",
    "evennia-static": "/static/website/css/website.css",
    "evennia-login": "/auth/login/",
}
LOGIN_CLIENTS = 4
RELOADS = 3
RELOAD_CLIENTS = 12


def _have_evennia():
    import importlib.util

    return importlib.util.find_spec("evennia") is not None


def _login_script(game, superuser, directory):
    """A wrk script that posts the superuser's login form with a valid CSRF cookie and
    token: Django checks the password (PBKDF2) and starts a session, answering 302."""
    _, body, r = game.get("/auth/login/")
    cookie = next(
        v.split(";", 1)[0] for v in r.headers.get_all("Set-Cookie") if v.startswith("csrftoken=")
    )
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    form = f"csrfmiddlewaretoken={token}&username={superuser[0]}&password={superuser[1]}"
    path = directory / "login.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{form}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f'wrk.headers["Cookie"] = "{cookie}"\n'
    )
    return path


def _pids_sampler(game):
    """RSS of the game's two processes (Portal and Server) and their children."""
    samplers = [RssSampler(pid) for pid in game.pids()]
    for s in samplers:
        s.start()
    return samplers


def _measure(ctx, game, key, section, path, load):
    samples = []
    for _ in range(ctx.cfg.runs):
        samplers = _pids_sampler(game)
        try:
            if seconds(ctx.cfg.warmup) > 0:
                run_wrk(ctx.cfg, game.port, path, ctx.cfg.warmup, load)
            result = run_wrk(ctx.cfg, game.port, path, ctx.cfg.duration, load)
        finally:
            for s in samplers:
                s.stop()
        result["rss_kib"] = sum(s.peak_kib for s in samplers)
        log(f"{section}: {GAMES[key]}: {result['rps']:.0f} rps, p99 {result['p99_ms']:.2f} ms")
        samples.append(result)
    ctx.rows.append(median_row(section, key, GAMES[key], samples))


def _reload_under_load(game, duration_after=3.0):
    """Client threads over the four pages while the game reloads RELOADS times: how many
    answers were right, failed (an error or a dropped connection) or empty, and the longest
    any request waited."""
    clients = evennia_game.Clients(game.port, evennia_game.PAGES, threads=RELOAD_CLIENTS)
    with clients:
        time.sleep(2)
        pid = game.server_pid()
        for _ in range(RELOADS):
            game.reload()
            pid = game.wait_for_new_server(pid)
            time.sleep(1)
        game.wait_until_serving()
        time.sleep(duration_after)
    return clients.counts, clients.longest


def section_evennia(ctx):
    """An Evennia game's website: its own Twisted stack against the same game on Bartizan."""
    keys = [k for k in GAMES if ctx.cfg.wants(k)]
    if not _have_evennia():
        for key in keys:
            for section in [*PAGES, "evennia-reload"]:
                ctx.rows.append(Row(section, key, GAMES[key], note="skipped: no evennia"))
        return
    directory = scratch() / "evennia"
    directory.mkdir(exist_ok=True)
    for key in keys:
        game = evennia_game.Game(
            directory, bartizan=key == "evennia-bartizan", name=key.replace("-", "")
        )
        log(f"evennia: making and starting {GAMES[key]}")
        try:
            game.create().start()
            for section, path in PAGES.items():
                load = None
                if section == "evennia-login":
                    (directory / key).mkdir(exist_ok=True)
                    # Each login hashes a password for about half a second: a few
                    # clients keep both cores busy without running into wrk's timeout.
                    script = _login_script(game, evennia_game.SUPERUSER, directory / key)
                    load = Load(connections=LOGIN_CLIENTS, script=script)
                _measure(ctx, game, key, section, path, load)
            log(f"evennia: {GAMES[key]}: {RELOADS} reloads under load")
            counts, longest = _reload_under_load(game)
            bad = counts["failed"] + counts["empty"]
            note = (
                f"{RELOADS} reloads, {RELOAD_CLIENTS} clients: {counts['ok']} answered, "
                f"{counts['failed']} failed, {counts['empty']} empty; longest wait {longest:.1f} s"
            )
            log(f"evennia-reload: {GAMES[key]}: {note}")
            ctx.rows.append(Row("evennia-reload", key, GAMES[key], errors=bad, note=note))
        finally:
            game.stop()
    for section in PAGES:
        mine, theirs = ctx.row(section, "evennia-bartizan"), ctx.row(section, "evennia-twisted")
        if mine and theirs:
            text = f"{section}: bartizan/twisted rps {mine.rps / theirs.rps:.2f}x (goal >= 1.0)"
            ctx.goals.append(with_errors(text, mine.rps >= theirs.rps, mine))
    reload_row = next(
        (r for r in ctx.rows if r.section == "evennia-reload" and r.server == "evennia-bartizan"),
        None,
    )
    if reload_row is not None:
        ctx.goals.append(
            (
                f"evennia-reload: bartizan {reload_row.note} (goal: 0 failed, 0 empty)",
                reload_row.errors == 0,
            )
        )
