"""Lines started per second by one worker: a token bucket that lets interactive traffic keep
priority (batch lines never start faster than ``batches.lines_per_second``)."""

from __future__ import annotations

import asyncio
import time

__all__ = ["Pacer"]


class Pacer:
    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:  # one waiter at a time: starts are spaced, never bunched
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
                now = self._next
            # No credit is saved up while idle beyond one interval: no burst after a pause.
            self._next = max(self._next, now - self._interval) + self._interval
