"""Running wrk against one server and reading its numbers from wrk's output."""

import re
import subprocess

from lib import HOST
from lib.config import Load, seconds
from lib.processes import ServerFailed

TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text):
    def number(pattern):
        match = re.search(pattern, text, re.M)
        return match[1] if match else None

    def latency_ms(percent):
        match = re.search(rf"^\s*{percent}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        return float(match[1]) * TIME_UNITS[match[2]] if match else None

    rps = number(r"^Requests/sec:\s*([\d.]+)")
    if rps is None:
        raise ServerFailed(f"could not parse wrk output:\n{text}")
    errors = int(number(r"Non-2xx or 3xx responses:\s*(\d+)") or 0)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return {
        "rps": float(rps),
        "p50_ms": latency_ms(50),
        "p99_ms": latency_ms(99),
        "errors": errors,
    }


def run_wrk(cfg, port, path, duration, load=None):
    load = load or Load()
    # fmt: off
    argv = [
        "wrk", f"-t{cfg.threads}", f"-c{load.connections or cfg.connections}",
        f"-d{duration}", "--latency",
        *(["-s", str(load.script)] if load.script else []),
        f"http://{HOST}:{port}{path}",
    ]
    # fmt: on
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds(duration) + 60)
    if done.returncode != 0:
        raise ServerFailed(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)
