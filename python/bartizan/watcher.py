"""``--reload``: notices a changed ``.py`` file under the working directory, so that the
supervisor can start workers on the new code. It polls (a walk of the tree once a second)
rather than asking the system to notify it: no dependency, and the same on every platform.
"""

from __future__ import annotations

import os
import time

from bartizan.logs import plural

POLL = 1.0
# Editors save in bursts: wait for the rest of one before reading the tree again.
DEBOUNCE = 0.5
SKIPPED = ("__pycache__", "node_modules", "target")


class SourceWatcher:
    """The ``.py`` files under the working directory, as of the last look, and when to look
    again."""

    def __init__(self) -> None:
        self.mtimes = source_mtimes()
        self.next_scan = time.monotonic() + POLL

    def poll(self) -> str | None:
        """What changed since the last look, in words for the log (``app.py and 2 others``);
        None when nothing did, or when the last look was less than ``POLL`` ago."""
        if time.monotonic() < self.next_scan:
            return None
        found, changed = source_mtimes(), None
        if found != self.mtimes:
            time.sleep(DEBOUNCE)
            found = source_mtimes()
            paths = sorted(
                p for p in found.keys() | self.mtimes.keys() if found.get(p) != self.mtimes.get(p)
            )
            self.mtimes = found
            shown = os.path.relpath(paths[0]) if paths else "a file"
            more = f" and {plural(len(paths) - 1, 'other')}" if len(paths) > 1 else ""
            changed = shown + more
        self.next_scan = time.monotonic() + POLL
        return changed


def source_mtimes() -> dict[str, float]:
    """The modification time of each ``.py`` file under the working directory, but those in
    hidden directories, bytecode caches and the trees of other tools' builds."""
    found = {}
    for root, dirs, files in os.walk(os.getcwd()):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED]
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(root, f)
                try:
                    found[p] = os.stat(p).st_mtime
                except OSError:
                    pass
    return found
