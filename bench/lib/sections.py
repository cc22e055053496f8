"""The sections. Each one benchmarks one thing across servers and states its goals; add
a function here and an entry in SECTIONS."""

import dataclasses

from lib import BENCH, log
from lib.config import Load
from lib.database import Postgres, use_sqlite
from lib.evennia import section_evennia
from lib.measure import BOOKKEEPER, bench_http, launch_server, run_inprocess
from lib.processes import ServerFailed, scratch, stop_server
from lib.results import (
    Row,
    best_peer,
    goal_beats_best_peer,
    goal_p99_not_worse,
    goal_ratio,
    with_errors,
)
from lib.servers import (
    BASELINE,
    DB_SERVERS,
    POOL_SERVERS,
    PROXY_FRONTS,
    SERVERS,
    STATIC_SERVERS,
    WSGI_SERVERS,
    bartizan_missing,
)
from lib.tls import section_tls


def hello_ok(status, body, headers):
    return status == 200 and body == b"Hello, World!"


def section_hello(ctx):
    """Plain WSGI hello world: the cost of the server itself."""
    bench_http(ctx, "hello", "bench.apps.hello:app", "/", hello_ok, WSGI_SERVERS)
    goal_ratio(ctx, "hello", "granian", 1.0, "hello: bartizan/granian rps")
    goal_p99_not_worse(ctx, "hello", "granian", "hello: bartizan p99 vs granian")


def section_django(ctx):
    """Demo Django site's home page; the in-process loop is the ceiling."""
    target = "bartizan.demo.wsgi:application"
    # Runs first, which also creates the demo DB before any server imports it.
    run_inprocess(ctx, "django", target, "/")
    run_inprocess(ctx, "django", target, "/", wake=True)
    bench_http(ctx, "django", target, "/", lambda s, b, h: s == 200, WSGI_SERVERS)
    goal_ratio(ctx, "django", "granian", 1.0, "django: bartizan/granian rps")
    goal_ratio(
        ctx, "django", "in-process-wake", 1.0, "django: bartizan/in-process waking a process"
    )
    # A CPU-bound page: admitting work beside it would only interleave it.
    goal_p99_not_worse(ctx, "django", "granian", "django: bartizan p99 vs granian")


def make_static_files(directory):
    """A ~4 KB stylesheet and a 1 MiB binary, the same bytes on every run."""
    import random

    directory.mkdir(parents=True, exist_ok=True)
    rules = []
    size = 0
    for n in range(1000):
        rule = (
            f".c{n} {{ margin: {n % 17}px {n % 5}px; color: #{n * 2654435761 % 0xFFFFFF:06x}; }}\n"
        )
        if size + len(rule) > 4096:
            break
        rules.append(rule)
        size += len(rule)
    files = {
        "small.css": "".join(rules).encode(),
        # Random bytes: nothing on the path can shrink them.
        "big.bin": random.Random(0).randbytes(1 << 20),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


def static_ok(expected, key, chunked):
    """200, the exact bytes, and the right Content-Length.

    A peer that frames the file as chunked, with no Content-Length, is still
    measured (the bytes are right) and added to `chunked` to be reported;
    Bartizan must send Content-Length.
    """

    def check(status, body, headers):
        if status != 200 or body != expected:
            return False
        length = headers.get("Content-Length")
        if length is not None:
            return length == str(len(expected))
        encoding = headers.get("Transfer-Encoding", "").lower()
        if key != BASELINE and "chunked" in encoding:
            chunked.add(key)
            return True
        return False

    return check


def section_static(ctx):
    """Files under /static/ served by the server itself, no Python per request."""
    directory = scratch() / "static-files"
    files = make_static_files(directory)
    for name, data in files.items():
        section = f"static {name}"
        chunked = set()
        checks = {key: static_ok(data, key, chunked) for key in STATIC_SERVERS}
        # The app is only there because the WSGI servers need one; nginx ignores it.
        target, path = "bench.apps.hello:app", f"/static/{name}"
        bench_http(ctx, section, target, path, checks, STATIC_SERVERS, static_dir=directory)
        for key in sorted(chunked):
            ctx.notes.append(
                f"{section}: {SERVERS[key].label} sent no Content-Length "
                f"(Transfer-Encoding: chunked); measured, its body checked byte for byte"
            )
        goal_ratio(ctx, section, "nginx", 0.8, f"{section}: bartizan/nginx rps")


def section_proxy(ctx):
    """Proxy fronts forwarding to one shared Bartizan app server."""
    section, target = "proxy", "bench.apps.hello:app"
    direct_label = "upstream direct (no proxy)"
    rows = [key for key in [*PROXY_FRONTS, "upstream"] if ctx.cfg.wants(key)]

    def no_rows(note):
        for key in rows:
            label = SERVERS[key].label if key in SERVERS else direct_label
            ctx.rows.append(Row(section, key, label, note=note))

    reason = bartizan_missing()
    if reason:
        # Every row needs the upstream, which is Bartizan.
        log(f"{section}: skipping: the upstream is Bartizan, which is {reason}")
        no_rows(f"skipped: upstream {reason}")
        return
    log(f"{section}: starting the shared upstream (bartizan, {target})")
    try:
        up = launch_server(ctx, "bartizan", section + "-upstream", target, "/", hello_ok)
    except ServerFailed as exc:
        log(f"{section}: upstream FAILED: {exc}")
        no_rows(f"failed: upstream {str(exc).splitlines()[0]}")
        return
    up.label = "upstream (bartizan app server)"
    try:
        # The same process with no front: the ceiling for the fronts' rows.
        direct = dataclasses.replace(up, label=direct_label)
        attached = {"upstream": direct}
        bench_http(ctx, section, target, "/", hello_ok, rows, upstream=up, attached=attached)
    finally:
        stop_server(up.proc)
    ctx.notes.append(
        "proxy: ratios are the Bartizan proxy front's numbers divided by the row's; "
        "each front's RSS is the front alone, the upstream's is in its direct row"
    )
    goal_ratio(ctx, section, "nginx-proxy", 1.0, "proxy: bartizan proxy/nginx proxy rps")


def waits_ok(path):
    expected = {"/io": b"waited", "/": b"Hello, World!"}.get(path)

    def check(status, body, headers):
        if path == "/cpu":
            return status == 200 and len(body) == 64
        return status == 200 and body == expected

    return check


def pool_section(ctx, section, path, load):
    target = "bench.apps.waits:app"
    ctx.load = load
    script = f" -s {load.script.name}" if load.script else ""
    ctx.notes.append(f"{section}: wrk -c{load.connections}{script}, path {path}")
    try:
        bench_http(ctx, section, target, path, waits_ok(path), POOL_SERVERS)
    finally:
        ctx.load = None


def section_io(ctx):
    """Requests that sleep 20 ms, as on a database across the network: threads that wait."""
    pool_section(ctx, "io", "/io", Load(connections=32))
    mine = ctx.row("io", "bartizan-20")
    if mine:
        # 20 threads each holding a request for 20 ms: 1,000 requests/s at most.
        ceiling = 20 / 0.020
        text = f"io: bartizan {mine.rps:.0f} rps of the 20-thread ceiling {ceiling:.0f}"
        ok = mine.rps >= 0.9 * ceiling
        ctx.goals.append(with_errors(f"{text}: {mine.rps / ceiling:.2f} (goal >= 0.9)", ok, mine))
    goal_beats_best_peer(ctx, "io", 0.95)
    goal_bookkeeping(ctx, "io")


def section_mixed(ctx):
    """Nine hellos to one /io request: cheap pages must not queue behind waiting ones."""
    pool_section(ctx, "mixed", "/", Load(connections=32, script=BENCH / "mixed.lua"))
    goal_beats_best_peer(ctx, "mixed", 1.5)
    goal_bookkeeping(ctx, "mixed")
    best = best_peer(ctx, "mixed")
    if best:
        goal_p99_not_worse(ctx, "mixed", best.server, f"mixed: bartizan p99 vs {best.label}")


def section_cpu(ctx):
    """PBKDF2 (C code without the GIL): the second core must be used."""
    pool_section(ctx, "cpu", "/cpu", Load(connections=4))
    goal_beats_best_peer(ctx, "cpu", 0.95)
    goal_bookkeeping(ctx, "cpu")


def goal_bookkeeping(ctx, section):
    """Goal: the pool's own bookkeeping thread under 1% of a core, loaded and idle."""
    mine = ctx.row(section, "bartizan-20")
    if not mine or mine.bookkeeping_load is None:
        return
    worst = max(mine.bookkeeping_load, mine.bookkeeping_idle or 0.0)
    text = (
        f"{section}: bartizan's {BOOKKEEPER} thread {100 * mine.bookkeeping_load:.2f}% of a "
        f"core under load, {100 * (mine.bookkeeping_idle or 0):.2f}% idle (goal < 1%)"
    )
    ctx.goals.append((text, worst < 0.01))


def page_ok(marker):
    def check(status, body, headers):
        return status == 200 and marker in body

    return check


def dbsite_section(ctx, section, path, marker, servers, database):
    """One page of bench/apps/dbsite, wrk -c16, on `database` (for the notes)."""
    ctx.load = Load(connections=16)
    ctx.notes.append(f"{section}: wrk -c16, path {path} of bench/apps/dbsite on {database}")
    try:
        target = "bench.apps.dbsite.wsgi:application"
        bench_http(ctx, section, target, path, page_ok(marker), servers)
    finally:
        ctx.load = None


def section_db(ctx):
    """A Django page with one ORM query on SQLite: Python between short C calls."""
    use_sqlite()
    dbsite_section(ctx, "db", "/", b"Newest books", DB_SERVERS, "SQLite")
    goal_ratio(ctx, "db", "granian", 1.0, "db: bartizan/granian --blocking-threads 1 rps")
    goal_ratio(ctx, "db", "bartizan-1", 1.0, "db: bartizan/bartizan --threads 1 rps")
    goal_p99_not_worse(ctx, "db", "granian", "db: bartizan p99 vs granian --blocking-threads 1")
    goal_bookkeeping(ctx, "db")


def section_pg(ctx):
    """The same site on PostgreSQL: a join over 20,000 rows, a few ms inside the database."""
    pg = Postgres()
    reason = pg.missing()
    if reason:
        log(f"pg: skipping: {reason}")
        ctx.notes.append(f"pg: skipped: {reason}")
        return
    pg.start()
    try:
        dbsite_section(ctx, "pg", "/report", b"most pages", POOL_SERVERS, "PostgreSQL")
    finally:
        pg.stop()
    goal_beats_best_peer(ctx, "pg", 1.0)
    goal_bookkeeping(ctx, "pg")


SECTIONS = {
    "hello": section_hello,
    "django": section_django,
    "static": section_static,
    "proxy": section_proxy,
    "io": section_io,
    "mixed": section_mixed,
    "cpu": section_cpu,
    "db": section_db,
    "pg": section_pg,
    "evennia": section_evennia,
    "tls": section_tls,
}
