"""What both admission backends do the same way: rpm-only counting, the concurrency slot, and
remembering rpm refusals so the key's next requests are refused before their bodies are read."""

from __future__ import annotations

from sluice.admission.backend import Hold, WindowRefusal, concurrency_refusal, rate_limited
from sluice.concurrency import ConcurrencyLimiter, Lease
from sluice.keys import KeyRecord
from sluice.limits import LimitDecision, RateLimiter
from sluice.metering.quota import insufficient_quota
from sluice.refusals import RefusalMemory, rpm_refusal

__all__ = ["Admitting"]


class Admitting:
    def __init__(
        self,
        limiter: RateLimiter,
        concurrency: ConcurrencyLimiter,
        refusals: RefusalMemory | None = None,
        default_max_concurrent: int = 0,
    ) -> None:
        self.limiter = limiter
        self.concurrency = concurrency
        self.refusals = refusals or RefusalMemory()
        # limits.default_max_concurrent, kept current by AppState.apply_settings.
        self.default_max_concurrent = default_max_concurrent

    def refuse_early(self, key: KeyRecord) -> None:
        """Refusals known without the body: a spent budget (by what this backend knows is
        committed) or an rpm refusal whose retry-after has not passed. O(1), no I/O."""
        budget = key.budget_micro
        if budget is not None:
            committed = self._committed(key)
            if committed >= budget:
                raise insufficient_quota(budget, committed)
        if key.rpm is not None:
            wait = self.refusals.wait_s(key.id, key.rpm)
            if wait > 0:
                raise rpm_refusal(key.rpm, wait)

    def _remember(self, key: KeyRecord, decision: LimitDecision) -> None:
        if decision.exceeded == "requests" and key.rpm is not None:
            # Its next requests are refused before their bodies are read, until retry-after.
            self.refusals.remember(key.id, key.rpm, decision.retry_after_s)

    def _refused(self, key: KeyRecord, decision: LimitDecision) -> WindowRefusal:
        self._remember(key, decision)
        return rate_limited(key, decision)

    async def count(self, key: KeyRecord) -> None:
        if key.rpm is None:
            return
        decision = await self.limiter.admit(key.id, key.rpm, None, 0)
        if not decision.allowed:
            raise self._refused(key, decision)

    async def _take_slot(self, key: KeyRecord, request_id: str) -> Lease | None:
        """A slot under the key's max_concurrent; None when the key needs none."""
        limit = key.max_concurrent
        if limit is not None:
            lease = await self.concurrency.acquire(key.id, limit, request_id)
        else:  # the default cap: per worker, in memory (concurrency.py says why)
            limit = self.default_max_concurrent
            if not limit:
                return None
            lease = await self.concurrency.acquire_local(key.id, limit, request_id)
        if lease is None:
            raise concurrency_refusal(limit)
        return lease

    async def _hold_slot(self, hold: Hold, request_id: str) -> None:
        """Add the slot to a hold, or release the hold and refuse (429, nothing held)."""
        try:
            hold.lease = await self._take_slot(hold.key, request_id)
        except BaseException:
            await self.release(hold)
            raise

    async def settle(self, hold: Hold, cost: int, tokens: int) -> None:
        """Exactly once (``Hold.claim``): the slot goes back first, so a failure below cannot
        leak it; the counters are settled in a ``finally``, so a cancellation while the slot
        went back still settles them."""
        if not hold.claim():
            return
        try:
            if hold.lease is not None:
                await self.concurrency.release(hold.lease)
        finally:
            await self._settle_counters(hold, cost, tokens - hold.tokens)

    def _committed(self, key: KeyRecord) -> int:
        raise NotImplementedError  # what each backend knows the key has committed

    async def _settle_counters(self, hold: Hold, cost: int, correction: int) -> None:
        raise NotImplementedError  # each backend settles its own budget and tpm counters

    async def release(self, hold: Hold) -> None:
        """Nothing was spent: a settlement at no cost and no tokens gives the whole hold back
        (the same single ``Hold.claim`` gate, so a release after a settle changes nothing)."""
        await self.settle(hold, 0, 0)
