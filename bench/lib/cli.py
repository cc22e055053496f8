"""bench/run's command line: which sections to run, setup, running them with servers
stopped however the run ends, and the report."""

import signal
import subprocess
import sys

from lib import log
from lib.config import Config
from lib.processes import remove_scratch, stop_all
from lib.results import Context, report
from lib.sections import SECTIONS
from lib.servers import ROW_KEYS, SERVERS
from lib.setup import ensure_requirements, ensure_venv, ensure_wrk


def busy_neighbours(count):
    """`count` processes that keep a core busy for the whole run, as other work on a
    shared machine would."""
    return [
        subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, start_new_session=True)
        for _ in range(count)
    ]


def usage(doc):
    print(doc.strip(), file=sys.stderr)
    print(f"\nsections: {', '.join(SECTIONS)} (or all)", file=sys.stderr)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv, doc):
    """Runs the sections named in `argv`; `doc` is the help text (bench/run's docstring)."""
    if any(a in ("-h", "--help") for a in argv):
        usage(doc)
        return 0
    selected = [a for a in argv if a != "all"] or list(SECTIONS)
    unknown = [s for s in selected if s not in SECTIONS]
    if unknown:
        usage(doc)
        print(f"\nbench: unknown section(s): {', '.join(unknown)}", file=sys.stderr)
        return 2

    ensure_venv()
    ensure_requirements()
    ensure_wrk()

    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally below stops servers
    # and partial results are still printed. SIGINT is set explicitly since
    # a shell's background job inherits it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    ctx = Context(cfg=Config())
    if ctx.cfg.servers:
        known = [*SERVERS, *ROW_KEYS]
        unknown = ctx.cfg.servers - set(known)
        if unknown:
            log(f"BENCH_SERVERS: unknown {sorted(unknown)}; known: {', '.join(known)}")
    interrupted = False
    neighbours = busy_neighbours(ctx.cfg.busy)
    if neighbours:
        ctx.notes.append(
            f"{len(neighbours)} busy neighbour(s) ran beside every server: yes > /dev/null"
        )
    try:
        try:
            for name in selected:
                SECTIONS[name](ctx)
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted; stopping servers")
        finally:
            # A second Ctrl-C must not leave servers behind mid-cleanup.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stop_all()
            for proc in neighbours:
                proc.kill()
                proc.wait()
        report(ctx, selected, interrupted)
    finally:
        remove_scratch()
    return 130 if interrupted else 0
