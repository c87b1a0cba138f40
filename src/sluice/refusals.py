"""Refusals known before a request's body is read: no I/O, no token count.

Admission counts a body's tokens before the tpm window and the budget reservation can be
checked, and that count is the costliest step of a large request. A key that is over its rpm or
has spent its budget would otherwise still make the gateway parse and tokenise every body it
sends. What is known without the body is checked first:

- the key's budget is exhausted: what this worker knows it has committed (``LocalLedger``'s exact
  counters in-process; the key cache's ``spent``, at most one cache TTL old, which only lags
  behind the true spend) is at or over the budget. The exact reservation would refuse it too.
- the key was refused on its rpm and the retry-after it was told has not passed yet. A request
  count only falls by time passing (an allowance given back in Redis can free a slot a little
  earlier: such a key may be refused until the retry-after it was told, never beyond).

Everything else (tpm and the budget reservation, which need the token count) stays exact and
runs after counting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sluice.errors import RateLimited
from sluice.limits import format_reset

__all__ = ["RefusalMemory", "rpm_refusal"]

_MAX_KEYS = 10_000


class RefusalMemory:
    """rpm refusals per key until their retry-after: one dict lookup per request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, tuple[float, int]] = {}  # key id -> (until, rpm it was under)

    def remember(self, key_id: str, rpm: int, retry_after_s: float) -> None:
        now = self._clock()
        if len(self._until) >= _MAX_KEYS:
            self._until = {k: v for k, v in self._until.items() if v[0] > now}
            if len(self._until) >= _MAX_KEYS:
                return  # bounded: a key not remembered is simply checked exactly
        self._until[key_id] = (now + retry_after_s, rpm)

    def wait_s(self, key_id: str, rpm: int | None) -> float:
        """Seconds the key must still wait under ``rpm``; 0 when it may be checked exactly."""
        if not self._until:
            return 0.0
        entry = self._until.get(key_id)
        if entry is None:
            return 0.0
        until, refused_under = entry
        wait = until - self._clock()
        if wait <= 0 or rpm != refused_under:  # over, or the key's limit changed since
            del self._until[key_id]
            return 0.0
        return wait


def rpm_refusal(rpm: int, wait_s: float) -> RateLimited:
    retry_after = max(int(wait_s + 0.999), 1)
    return RateLimited(
        f"Rate limit reached for this key on requests per minute (limit {rpm}). "
        f"Try again in {retry_after}s.",
        headers={
            "x-ratelimit-limit-requests": str(rpm),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": format_reset(wait_s),
            "retry-after": str(retry_after),
        },
    )
