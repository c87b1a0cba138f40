"""A lock granted in the order it was asked for.

The engines take turns on the CPU a sentence or a 30-second window at a time. With a plain
``threading.Lock`` the thread that releases can take the lock straight back before a waiting
thread wakes, so a long text or recording would still hold the engine to its end; tickets make
each waiter's turn come after those that asked before it.
"""

from __future__ import annotations

import threading
from types import TracebackType

__all__ = ["Turns"]


class Turns:
    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._changed.wait_for(lambda: self._serving == ticket)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._changed:
            self._serving += 1
            self._changed.notify_all()
