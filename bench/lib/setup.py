"""Setup before a run: the right interpreter, the pinned peers, wrk."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lib import BENCH, VENV, VENV_PY, log


def ensure_venv():
    # Servers are started with this interpreter, so the harness must be in
    # the project's venv too (that is where bartizan gets built into).
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not VENV_PY.exists():
        log(f"creating {VENV} (with system site-packages)")
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(VENV)],
            check=True,
        )
    # The entry point, not this module: bench/run starts over in the venv.
    os.execv(str(VENV_PY), [str(VENV_PY), str(BENCH / "run"), *sys.argv[1:]])


def pinned_requirements():
    pins = {}
    for line in (BENCH / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip()] = version.strip()
    return pins


def installed_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def ensure_requirements():
    if os.environ.get("BENCH_VENV"):
        log(f"running in {VENV}: its own packages, no pinned peers installed")
        return
    stale = {
        name: want
        for name, want in pinned_requirements().items()
        if installed_version(name) != want
    }
    if not stale:
        return
    log(f"installing pinned peers into the venv: {stale}")
    subprocess.run(
        [str(VENV_PY), "-m", "pip", "install", "--quiet", "-r", str(BENCH / "requirements.txt")],
        check=True,
    )


def ensure_wrk():
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk not found; installing it with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    if not shutil.which("wrk"):
        sys.exit("bench: wrk is not installed (Debian: apt-get install -y wrk)")
