"""The harness behind bench/run, one module per concept, and what they all share: where
the repository and its venv are, the loopback address, and the progress log."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The repository itself, for the helpers bench/ shares with the tests (tests/support: /proc
# reading, the Evennia game).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BENCH = ROOT / "bench"
# BENCH_VENV: another virtualenv to run in (say, one with Evennia 6.1 on Python 3.12); the
# pinned peers are then not installed into it.
VENV = Path(os.environ.get("BENCH_VENV") or ROOT / ".venv").resolve()
VENV_PY = VENV / "bin" / "python"
HOST = "127.0.0.1"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
