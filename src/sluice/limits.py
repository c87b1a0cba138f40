"""Per-key rpm/tpm limits with a sliding-window counter.

Algorithm: the current and previous one-minute windows are counted; the load "in the last
minute" is ``previous * (1 - elapsed/60) + current``. It is exact at the start of a quiet key
(a 60 rpm key gets exactly 60 of a burst), needs two integers per key and limit, and maps to a
short atomic Lua script for Redis. The in-memory implementation here is the embedded default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "LimitDecision",
    "RateLimiter",
    "MemoryRateLimiter",
    "WindowState",
    "format_reset",
    "WINDOW_S",
]

WINDOW_S = 60.0


def format_reset(seconds: float) -> str:
    """OpenAI's duration format for x-ratelimit-reset-*: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(slots=True)
class LimitDecision:
    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    retry_after_s: float = 0.0
    exceeded: str | None = None  # "requests" or "tokens"


@dataclass(slots=True)
class WindowState:
    window: int = 0  # index of the current minute
    current: int = 0
    previous: int = 0

    def roll(self, now: float) -> float:
        """Advance to ``now``; returns seconds elapsed inside the current window."""
        index = int(now // WINDOW_S)
        if index != self.window:
            self.previous = self.current if index == self.window + 1 else 0
            self.current = 0
            self.window = index
        return now - index * WINDOW_S

    def load(self, elapsed: float) -> float:
        return self.previous * (1 - elapsed / WINDOW_S) + self.current

    def wait_for(self, limit: int, cost: int, elapsed: float) -> float:
        """Seconds until ``cost`` more fits under ``limit``."""
        room = limit - cost - self.current
        if room >= 0 and self.previous > 0:
            needed = WINDOW_S * (1 - room / self.previous)
            if needed <= WINDOW_S:
                return max(needed - elapsed, 0.0)
        # Not within this window: wait for the next one, where current becomes previous.
        until_next = WINDOW_S - elapsed
        if self.current <= 0 or limit - cost < 0:
            return until_next
        fraction = max(1 - (limit - cost) / self.current, 0.0)
        return until_next + WINDOW_S * fraction


class RateLimiter(Protocol):
    async def admit(
        self, key_id: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> LimitDecision: ...

    async def adjust_tokens(self, key_id: str, tpm: int | None, delta: int) -> None: ...


def _headers(kind: str, limit: int, remaining: float, reset_s: float) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(int(remaining), 0)),
        f"x-ratelimit-reset-{kind}": format_reset(reset_s),
    }


class MemoryRateLimiter:
    """In-process limiter: exact for one process, the embedded default."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: dict[str, WindowState] = {}
        self._tokens: dict[str, WindowState] = {}

    async def admit(
        self, key_id: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> LimitDecision:
        now = self._clock()
        headers: dict[str, str] = {}
        checks: list[tuple[str, int, int, WindowState]] = []
        if rpm is not None:
            checks.append(("requests", rpm, 1, self._requests.setdefault(key_id, WindowState())))
        if tpm is not None:
            checks.append(("tokens", tpm, tokens, self._tokens.setdefault(key_id, WindowState())))
        for kind, limit, cost, state in checks:
            elapsed = state.roll(now)
            load = state.load(elapsed)
            if load + cost > limit:
                wait = state.wait_for(limit, cost, elapsed)
                headers.update(_headers(kind, limit, limit - load, wait))
                return LimitDecision(False, headers, wait, kind)
        for kind, limit, cost, state in checks:
            elapsed = state.roll(now)
            state.current += cost
            load = state.load(elapsed)
            headers.update(_headers(kind, limit, limit - load, state.wait_for(limit, 1, elapsed)))
        return LimitDecision(True, headers)

    async def adjust_tokens(self, key_id: str, tpm: int | None, delta: int) -> None:
        if tpm is None or delta == 0:
            return
        state = self._tokens.get(key_id)
        if state is not None:
            state.roll(self._clock())
            state.current = max(state.current + delta, 0)
