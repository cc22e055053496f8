"""Measuring servers for a section: start each one, check its answer, warm it up, run
wrk while sampling its RSS, stop it, and add the median row; also the in-process loop,
the app with no server."""

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lib import BENCH, ROOT, log
from lib.config import seconds
from lib.processes import (
    RssSampler,
    ServerFailed,
    free_port,
    log_tail,
    scratch,
    server_env,
    start_server,
    stop_server,
    wait_ready,
)
from lib.results import Row, median_row
from lib.servers import SERVERS, Launch, py
from lib.wrk import run_wrk

from tests.support.procfs import thread_cpu_seconds


@dataclass
class Running:
    """A server started once and shared by a section's measurements."""

    label: str
    proc: subprocess.Popen
    port: int
    log_path: Path

    def check_alive(self):
        if self.proc.poll() is not None:
            raise ServerFailed(
                f"{self.label} exited with code {self.proc.returncode}\n{log_tail(self.log_path)}"
            )


def launch_server(ctx, key, section, target, path, check, static_dir=None, upstream=None):
    """Start one server and wait until it answers `path` correctly."""
    spec = SERVERS[key]
    port = free_port()
    safe = re.sub(r"[^\w.-]+", "_", section)  # section names may hold spaces
    workdir = Path(tempfile.mkdtemp(prefix=f"{safe}-{key}-", dir=scratch()))
    launch = Launch(
        target=target, port=port, workdir=workdir, static_dir=static_dir, upstream=upstream
    )
    log_path = workdir / "server.log"
    proc = start_server(spec.argv(launch), log_path)
    try:
        wait_ready(proc, port, path, check, log_path, ctx.cfg.start_timeout)
    except BaseException:
        stop_server(proc, spec.stop_signal)
        raise
    if spec.ready_line and spec.ready_line not in log_tail(log_path, 200):
        log(f"{spec.label}: answering, but never logged {spec.ready_line!r}")
    return Running(spec.label, proc, port, log_path)


# Bartizan's pool thread that does its own bookkeeping (the GIL probe): its CPU is
# reported under load and idle, as a share of one core.
BOOKKEEPER = "bartizan-probe"
IDLE_LOOK = 1.0


def bookkeeping_share(pid, during):
    """The bookkeeping thread's CPU over `during()`, as a share of one core."""
    import time

    before, start = thread_cpu_seconds(pid, BOOKKEEPER), time.monotonic()
    during()
    used = thread_cpu_seconds(pid, BOOKKEEPER) - before
    return used / max(time.monotonic() - start, 1e-9)


def measure_running(ctx, server, path):
    """Warm up and measure a server that is already answering."""
    import time

    # Sampling starts once serving: peak RSS is about load, not imports.
    sampler = RssSampler(server.proc.pid)
    sampler.start()
    result = {}
    try:
        if seconds(ctx.cfg.warmup) > 0:
            run_wrk(ctx.cfg, server.port, path, ctx.cfg.warmup, ctx.load)

        def load():
            result.update(run_wrk(ctx.cfg, server.port, path, ctx.cfg.duration, ctx.load))

        result["bookkeeping_load"] = bookkeeping_share(server.proc.pid, load)
        result["bookkeeping_idle"] = bookkeeping_share(
            server.proc.pid, lambda: time.sleep(IDLE_LOOK)
        )
    finally:
        sampler.stop()
    if server.proc.poll() is not None:
        raise ServerFailed(f"died during the run\n{log_tail(server.log_path)}")
    result["rss_kib"] = sampler.peak_kib
    return result


def measure_server(ctx, key, section, target, path, check, static_dir=None, upstream=None):
    """Start one server, warm it up, measure it with wrk, stop it."""
    server = launch_server(ctx, key, section, target, path, check, static_dir, upstream)
    try:
        return measure_running(ctx, server, path)
    finally:
        stop_server(server.proc, SERVERS[key].stop_signal)


def bench_http(
    ctx, section, target, path, check, servers, static_dir=None, upstream=None, attached=None
):
    """Measure every server in `servers` serving `target`; add their rows.

    `check(status, body, headers)` must accept the answer before wrk runs;
    a dict gives each server key its own. `static_dir`, when given, is
    mounted at /static/ by every server. `upstream`, a Running app server,
    is what proxy fronts forward to; a measurement fails if it has died.
    `attached` maps row keys (listed in `servers` too) to Running servers
    that are measured where they are, not started or stopped here.
    """
    cfg = ctx.cfg
    attached = attached or {}
    active = []
    for key in servers:
        if not cfg.wants(key):
            continue
        if key in attached:
            active.append(key)
            continue
        reason = SERVERS[key].missing()
        if reason:
            log(f"{section}: skipping {SERVERS[key].label}: {reason}")
            ctx.rows.append(Row(section, key, SERVERS[key].label, note=f"skipped: {reason}"))
        else:
            active.append(key)

    samples = {key: [] for key in active}
    failed = {}
    for round_no in range(cfg.runs):
        # Rotate the order each round so slow drift on a noisy machine does
        # not always favour the same server.
        shift = round_no % len(active) if active else 0
        for key in active[shift:] + active[:shift]:
            if key in failed:
                continue
            label = attached[key].label if key in attached else SERVERS[key].label
            log(f"{section}: {label} (round {round_no + 1}/{cfg.runs})")
            try:
                accept = check[key] if isinstance(check, dict) else check
                if upstream is not None:
                    upstream.check_alive()
                if key in attached:
                    server = attached[key]
                    # Answers at once if healthy; re-checked since earlier
                    # rows ran against it.
                    wait_ready(server.proc, server.port, path, accept, server.log_path, 5.0)
                    result = measure_running(ctx, server, path)
                else:
                    up_port = upstream.port if upstream is not None else None
                    result = measure_server(
                        ctx, key, section, target, path, accept, static_dir, up_port
                    )
                if upstream is not None:
                    # A front whose upstream died mid-run measured error pages.
                    upstream.check_alive()
            except ServerFailed as exc:
                log(f"{section}: {label} FAILED: {exc}")
                failed[key] = str(exc).splitlines()[0]
                continue
            samples[key].append(result)
            log(
                f"{section}: {label}: {result['rps']:.0f} rps, "
                f"p99 {result['p99_ms']:.2f} ms, errors {result['errors']}"
            )
            if result.get("bookkeeping_load"):
                log(
                    f"{section}: {label}: {BOOKKEEPER} thread "
                    f"{100 * result['bookkeeping_load']:.2f}% of a core under load, "
                    f"{100 * result['bookkeeping_idle']:.2f}% idle"
                )

    for key in active:
        label = attached[key].label if key in attached else SERVERS[key].label
        if key in failed:
            ctx.rows.append(Row(section, key, label, note=f"failed: {failed[key]}"))
        else:
            ctx.rows.append(median_row(section, key, label, samples[key]))


def run_inprocess(ctx, section, target, path, wake=False):
    """Median over rounds of bench/inprocess.py: the app with no server; with `wake`, each
    call also wakes a sleeping process, as each response of a server must."""
    key, label = (
        ("in-process-wake", "in-process, waking a process per call")
        if wake
        else ("in-process", "in-process (no server)")
    )
    flags = ["--wake"] if wake else []
    samples = []
    for round_no in range(ctx.cfg.runs):
        log(f"{section}: {label}, {ctx.cfg.inproc_calls} calls (round {round_no + 1})")
        done = subprocess.run(
            py(str(BENCH / "inprocess.py"), *flags, target, path, str(ctx.cfg.inproc_calls)),
            cwd=ROOT,
            env=server_env(),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            log(f"{section}: {label} FAILED:\n{tail}")
            ctx.rows.append(Row(section, key, label, note="failed"))
            return
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["rss_kib"] = result.pop("peak_rss_kib")
        result["errors"] = 0
        samples.append(result)
        log(f"{section}: {label}: {result['rps']:.0f} calls/s")
    row = median_row(section, key, label, samples)
    row.latency_comparable = False
    ctx.rows.append(row)
