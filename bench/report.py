#!/usr/bin/env python3
"""Render saved benchmark runs as Markdown, or compare two of them.

    bench/report.py RUN.json             the run's table, notes and goals
    bench/report.py BEFORE.json AFTER.json
                                         rps and p99 of the rows both runs have, and AFTER/BEFORE

bench/run saves every run as JSON beside its Markdown (in bench/results/), so
runs from different days or builds compare without running them again.
"""

import json
import sys
from pathlib import Path

# bench/ itself, so that its `lib` package imports however this script is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.render import compare, render


def main(argv):
    if len(argv) not in (1, 2) or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = []
    for path in argv:
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as exc:
            print(f"report: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    print(render(runs[0]) if len(runs) == 1 else compare(*runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
