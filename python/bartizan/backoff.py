"""How long the supervisor waits before starting a worker again after one failed: a crash
loop (a broken deploy, a port taken away) must not become a busy loop, yet a healthy server
that loses a worker now and then should get it back at once."""

from __future__ import annotations

START = 0.5
MAX = 30.0
# A worker that lived this long was healthy: its crash starts the delays afresh.
HEALTHY_AFTER = 60.0


class Backoff:
    """The delay doubles with each failure, up to ``MAX``."""

    def __init__(self) -> None:
        self.delay = START

    def failed(self, lived: float = 0.0) -> float:
        """The wait before the next try, after a failure of a worker that had been running
        for ``lived`` seconds. The next failure's wait is twice as long."""
        if lived > HEALTHY_AFTER:
            self.delay = START
        delay = self.delay
        self.delay = min(delay * 2, MAX)
        return delay
