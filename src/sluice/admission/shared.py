"""Admission shared by every replica through Redis, with worker allowances when enabled.

A key this worker keeps admitting is admitted from its allowance with no I/O, and settled in
the lease's next batch (``redis_backend/allowance.py``); other requests are admitted exactly,
the rate-limit and budget scripts started together so they share one pipelined round trip, and
settled with two scripts likewise. A hold that needs those round trips to settle says so
(``Hold.waits``) and the relay settles it off the response path.
"""

from __future__ import annotations

from sluice.admission.backend import Hold, WindowRefusal, rate_limited
from sluice.admission.base import Admitting
from sluice.admission.together import both_settled
from sluice.concurrency import ConcurrencyLimiter
from sluice.errors import InsufficientQuota, RateLimited
from sluice.keys import KeyRecord
from sluice.limits import LimitDecision, RateLimiter
from sluice.metering.quota import BudgetLedger, Reservation
from sluice.redis_backend.allowance import Allowances
from sluice.refusals import RefusalMemory

__all__ = ["SharedAdmission"]


class SharedAdmission(Admitting):
    def __init__(
        self,
        limiter: RateLimiter,
        ledger: BudgetLedger,
        concurrency: ConcurrencyLimiter,
        allowances: Allowances | None = None,
        refusals: RefusalMemory | None = None,
        default_max_concurrent: int = 0,
    ) -> None:
        super().__init__(limiter, concurrency, refusals, default_max_concurrent)
        self.ledger = ledger
        # None: every request is admitted with its own round trip (exact at every replica).
        self.allowances = allowances

    def _committed(self, key: KeyRecord) -> int:
        return key.spent_micro  # the key cache's, which only lags behind the true spend

    async def admit(self, key: KeyRecord, request_id: str, tokens: int, estimate: int) -> Hold:
        try:
            decision, reservation = await self._limit_and_reserve(key, tokens, estimate)
        except WindowRefusal as refused:
            self._remember(key, refused.decision)
            raise
        leased = self.allowances is not None and self.allowances.leased(reservation)
        hold = Hold(key, reservation, tokens, None, decision.headers, waits=not leased)
        await self._hold_slot(hold, request_id)
        lease = hold.lease
        if lease is not None and not lease.local:
            hold.waits = True  # a slot counted in Redis is given back with a round trip
        return hold

    async def _limit_and_reserve(
        self, key: KeyRecord, tokens: int, estimate: int
    ) -> tuple[LimitDecision, Reservation]:
        """From this worker's allowance for the key when it has one (no I/O), else exactly."""
        allowances = self.allowances
        if allowances is None:
            return await self._admit_exactly(key, tokens, estimate)
        taken = allowances.take(key, tokens, estimate)
        if taken is not None:
            return taken
        try:
            admitted = await self._admit_exactly(key, tokens, estimate)
        except (RateLimited, InsufficientQuota):
            # What this worker holds unused for the key may be what is in the way: give it
            # back and ask once more, so an allowance never refuses a request that would fit.
            if not await allowances.refused_exactly(key.id):
                raise
            admitted = await self._admit_exactly(key, tokens, estimate)
        allowances.admitted_exactly(key, tokens, estimate)
        return admitted

    async def _admit_exactly(
        self, key: KeyRecord, tokens: int, estimate: int
    ) -> tuple[LimitDecision, Reservation]:
        """Rate-limit check and budget reservation started together (one pipelined round
        trip instead of two); each undone if the other refuses."""
        limited, reserved = await both_settled(
            self.limiter.admit(key.id, key.rpm, key.tpm, tokens),
            self.ledger.reserve(key.id, key.budget_micro, key.spent_micro, estimate),
        )
        if isinstance(limited, BaseException) or not limited.allowed:
            if not isinstance(reserved, BaseException):
                await self.ledger.release(reserved)
            if isinstance(limited, BaseException):
                raise limited
            raise rate_limited(key, limited)
        if isinstance(reserved, BaseException):
            await self.limiter.adjust_tokens(key.id, key.tpm, -tokens)
            raise reserved
        return limited, reserved

    async def _settle_counters(self, hold: Hold, cost: int, correction: int) -> None:
        key, allowances = hold.key, self.allowances
        if allowances is not None and allowances.leased(hold.reservation):
            # Admitted from an allowance: settled with its lease's batch, no I/O here.
            allowances.settle(hold.reservation, cost, 0 if key.tpm is None else correction)
            return
        for outcome in await both_settled(  # both scripts share one pipelined round trip
            self.ledger.settle(hold.reservation, cost),
            self.limiter.adjust_tokens(key.id, key.tpm, correction),
        ):
            if isinstance(outcome, BaseException):
                raise outcome
