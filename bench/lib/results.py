"""A run's results: the rows and goals sections add to a Context, the goals' checks, and
the run as plain data, printed as Markdown and saved with its JSON."""

import dataclasses
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib import BENCH, log
from lib.config import Config, Load
from lib.render import render
from lib.servers import SERVERS, baseline
from lib.setup import installed_version


@dataclass
class Row:
    section: str
    server: str  # a SERVERS key, or a free-form name for non-server rows
    label: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_kib: int | None = None
    errors: int | None = None
    # CPU of the server's bookkeeping thread, as a share of one core (Bartizan only).
    bookkeeping_load: float | None = None
    bookkeeping_idle: float | None = None
    note: str = ""
    # False when latency means something else (per call, not per request
    # under load), so a latency ratio against it would mislead.
    latency_comparable: bool = True


@dataclass
class Context:
    cfg: Config
    rows: list = field(default_factory=list)
    goals: list = field(default_factory=list)  # (text, True/False/None)
    # Other work on the machine skews results; shown so a reader can judge.
    load_at_start: float = field(default_factory=lambda: os.getloadavg()[0])
    notes: list = field(default_factory=list)
    load: Load | None = None  # the running section's, when it differs

    def row(self, section, server):
        for row in self.rows:
            if row.section == section and row.server == server and row.rps:
                return row
        return None


def median_row(section, key, label, samples):
    return Row(
        section=section,
        server=key,
        label=label,
        rps=statistics.median(s["rps"] for s in samples),
        p50_ms=statistics.median(s["p50_ms"] for s in samples),
        p99_ms=statistics.median(s["p99_ms"] for s in samples),
        rss_kib=max(s["rss_kib"] for s in samples),
        errors=sum(s["errors"] for s in samples),
        bookkeeping_load=max((s.get("bookkeeping_load") or 0.0) for s in samples),
        bookkeeping_idle=max((s.get("bookkeeping_idle") or 0.0) for s in samples),
    )


# --------------------------------------------------------------------------
# Goals.


def goal_ratio(ctx, section, other, minimum, text):
    """Goal: the section baseline's rps / `other`'s rps >= minimum."""
    mine, theirs = ctx.row(section, baseline(section)), ctx.row(section, other)
    if not (mine and theirs):
        ctx.goals.append((f"{text}: n/a (missing result)", None))
        return
    ratio = mine.rps / theirs.rps
    text = f"{text}: {ratio:.2f}x (goal >= {minimum}x)"
    ctx.goals.append(with_errors(text, ratio >= minimum, mine))


def with_errors(text, ok, row):
    # Fast failures are not a win: a run with errors cannot pass a goal.
    if row.errors:
        return (f"{text}, but {row.label} had {row.errors} errors", False)
    return (text, ok)


def goal_p99_not_worse(ctx, section, other, text):
    mine, theirs = ctx.row(section, baseline(section)), ctx.row(section, other)
    if not (mine and theirs):
        ctx.goals.append((f"{text}: n/a (missing result)", None))
        return
    text = f"{text}: {mine.p99_ms:.2f} ms vs {theirs.p99_ms:.2f} ms (goal: no worse)"
    ctx.goals.append(with_errors(text, mine.p99_ms <= theirs.p99_ms, mine))


def best_peer(ctx, section):
    mine = baseline(section)
    peers = [r for r in ctx.rows if r.section == section and r.rps and r.server != mine]
    return max(peers, key=lambda r: r.rps, default=None)


def goal_beats_best_peer(ctx, section, minimum):
    best = best_peer(ctx, section)
    if best is None:
        ctx.goals.append((f"{section}: n/a (no peer result)", None))
        return
    text = f"{section}: bartizan/best peer ({best.label}) rps"
    goal_ratio(ctx, section, best.server, minimum, text)


# --------------------------------------------------------------------------
# Report.


def run_data(ctx, selected, interrupted):
    """Everything a report needs, as plain data: what bench/report.py renders."""
    cfg = ctx.cfg
    versions = []
    for key in dict.fromkeys(r.server for r in ctx.rows):
        if key in SERVERS and not ctx_row_skipped(ctx, key):
            versions.append(f"{SERVERS[key].label} {SERVERS[key].version()}")
    versions.append(f"django {installed_version('django') or '?'}")
    return {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "load_at_start": ctx.load_at_start,
        "python": sys.version.split()[0],
        "sections": selected,
        "interrupted": interrupted,
        "config": {
            "duration": cfg.duration,
            "warmup": cfg.warmup,
            "connections": cfg.connections,
            "threads": cfg.threads,
            "runs": cfg.runs,
        },
        "versions": versions,
        "baselines": {row.section: baseline(row.section) for row in ctx.rows},
        "rows": [dataclasses.asdict(row) for row in ctx.rows],
        "notes": ctx.notes,
        "goals": [{"text": text, "ok": ok} for text, ok in ctx.goals],
    }


def report(ctx, selected, interrupted):
    """Prints the Markdown and saves it, with the run's JSON, under BENCH_RESULTS."""
    data = run_data(ctx, selected, interrupted)
    markdown = render(data)
    print(markdown, flush=True)
    results = Path(os.environ.get("BENCH_RESULTS", BENCH / "results"))
    stem = time.strftime("%Y%m%d-%H%M%S-") + "-".join(selected)
    try:
        results.mkdir(parents=True, exist_ok=True)
        (results / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
        (results / f"{stem}.md").write_text(markdown + "\n")
        log(f"saved {results / stem}.json and .md")
    except OSError as exc:
        log(f"could not save the results in {results}: {exc}")


def ctx_row_skipped(ctx, key):
    return all(r.rps is None for r in ctx.rows if r.server == key)
