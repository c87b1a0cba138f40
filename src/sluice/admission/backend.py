"""The admission backend protocol and the hold it hands out.

A request is admitted against a key's limits once, by ``AdmissionBackend.admit``, which either
refuses it (429/402, nothing left held) or returns a ``Hold``: its budget reservation, its
tokens in the tpm window, its ``max_concurrent`` slot and, with Redis, the allowance lease it
was admitted from. The hold is given back exactly once, by ``settle`` (the real cost and token
count) or ``release`` (nothing was spent): ``Hold.claim`` is the one gate both go through, so a
second settle, or a release after a settle, changes nothing.

The relay sees only this module: whether limits live in this process or in Redis, and whether
a request came from a worker's allowance, is the backend's business (``local.py``,
``shared.py``). ``Hold.waits`` says whether settling it waits for I/O: the relay then settles
it off the response path, otherwise inline, since a task would cost more than the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sluice.concurrency import Lease
from sluice.errors import RateLimited
from sluice.keys import KeyRecord
from sluice.limits import LimitDecision
from sluice.metering.quota import Reservation

__all__ = ["AdmissionBackend", "Hold", "WindowRefusal", "concurrency_refusal", "rate_limited"]


@dataclass(slots=True, eq=False)
class Hold:
    """What one admitted request holds against its key, given back exactly once."""

    key: KeyRecord
    reservation: Reservation  # the budget hold
    tokens: int  # counted in the tpm window at admission
    lease: Lease | None  # a max_concurrent slot
    headers: dict[str, str]  # x-ratelimit-* as of admission
    waits: bool  # settling needs I/O (Redis round trips): settle off the response path
    done: bool = False

    @property
    def amount(self) -> int:
        """Micro-dollars reserved."""
        return self.reservation.amount

    def claim(self) -> bool:
        """True the first time only: the caller then gives the hold back. Set before any
        ``await``, so a settlement cancelled half-way is never started a second time."""
        if self.done:
            return False
        self.done = True
        return True


class AdmissionBackend(Protocol):
    # Slots per key and worker for keys without their own max_concurrent (0: none); the
    # settings' value, kept current on reload.
    default_max_concurrent: int

    def refuse_early(self, key: KeyRecord) -> None:
        """Refusals known without the body (``sluice.refusals``): O(1), no I/O."""
        ...

    async def count(self, key: KeyRecord) -> None:
        """Count one request against the key's rpm only (calls that cost nothing)."""
        ...

    async def admit(self, key: KeyRecord, request_id: str, tokens: int, estimate: int) -> Hold:
        """Rate limits, budget reservation and concurrency slot, or a refusal holding nothing."""
        ...

    async def settle(self, hold: Hold, cost: int, tokens: int) -> None:
        """Charge ``cost`` micro-dollars and ``tokens`` used; once per hold."""
        ...

    async def release(self, hold: Hold) -> None:
        """Give everything back, charging nothing; a no-op once settled."""
        ...


class WindowRefusal(RateLimited):
    """A refusal by the rpm/tpm windows, carrying the limiter's decision."""

    def __init__(self, message: str, decision: LimitDecision, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.decision = decision


def rate_limited(key: KeyRecord, decision: LimitDecision) -> WindowRefusal:
    retry_after = max(int(decision.retry_after_s + 0.999), 1)
    return WindowRefusal(
        f"Rate limit reached for this key on {decision.exceeded} per minute "
        f"(limit {key.rpm if decision.exceeded == 'requests' else key.tpm}). "
        f"Try again in {retry_after}s.",
        decision,
        headers={**decision.headers, "retry-after": str(retry_after)},
    )


def concurrency_refusal(limit: int) -> RateLimited:
    return RateLimited(
        f"Too many concurrent requests for this key (limit {limit}). "
        "Retry when one of your requests has finished.",
        code="concurrency_limit_exceeded",
        headers={"retry-after": "1"},
    )
