"""How often a background loop looks for work in the database while it finds none.

Every worker of every replica runs the task poller and the batch runner; each look is a
database round trip (about a millisecond of CPU on SQLite, a write for the task poller), paid
whether or not there is anything to do. While looks find nothing, the wait doubles up to
``ceiling`` times the configured interval; the first look that finds work, or a local wake-up
(a task or batch submitted on this worker), brings it back to the interval. A replica's idle
polling costs a fifth of what it did, and work another replica leaves behind (a lease that ran
out) is still found within ``ceiling`` intervals.
"""

from __future__ import annotations

__all__ = ["IdleBackoff"]


class IdleBackoff:
    def __init__(self, interval_s: float, ceiling: float = 5.0) -> None:
        self._interval_s = interval_s
        self._longest_s = interval_s * ceiling
        self._wait_s = interval_s

    def after(self, found_work: bool) -> float:
        """The wait before the next look, given what this one found."""
        if found_work:
            self._wait_s = self._interval_s
        else:
            self._wait_s = min(self._wait_s * 2, self._longest_s)
        return self._wait_s

    def reset(self) -> None:
        """Work may be waiting (a local submit): look again at the configured pace."""
        self._wait_s = self._interval_s
