"""Admission in this process: exact for one worker, the embedded default (no Redis).

Nothing here waits for I/O, so admission and settlement complete without suspending; a hold is
settled inline (``Hold.waits`` is False) and concurrent requests on the event loop cannot both
pass a check that only one of them fits.
"""

from __future__ import annotations

from sluice.admission.backend import Hold
from sluice.admission.base import Admitting
from sluice.concurrency import ConcurrencyLimiter, MemoryConcurrency
from sluice.keys import KeyRecord
from sluice.limits import MemoryRateLimiter, RateLimiter
from sluice.metering.quota import LocalLedger
from sluice.refusals import RefusalMemory

__all__ = ["LocalAdmission"]


class LocalAdmission(Admitting):
    def __init__(
        self,
        limiter: RateLimiter | None = None,
        ledger: LocalLedger | None = None,
        concurrency: ConcurrencyLimiter | None = None,
        refusals: RefusalMemory | None = None,
        default_max_concurrent: int = 0,
    ) -> None:
        super().__init__(
            limiter or MemoryRateLimiter(),
            concurrency or MemoryConcurrency(),
            refusals,
            default_max_concurrent,
        )
        self.ledger = ledger or LocalLedger()

    def _committed(self, key: KeyRecord) -> int:
        return self.ledger.committed(key.id, key.spent_micro)  # exact: this process's counters

    async def admit(self, key: KeyRecord, request_id: str, tokens: int, estimate: int) -> Hold:
        """Rate-limit check, then budget reservation, then the slot; each undone if a later
        one refuses. In order: in memory, running them together would only add tasks."""
        decision = await self.limiter.admit(key.id, key.rpm, key.tpm, tokens)
        if not decision.allowed:
            raise self._refused(key, decision)
        try:
            reservation = await self.ledger.reserve(
                key.id, key.budget_micro, key.spent_micro, estimate
            )
        except BaseException:
            await self.limiter.adjust_tokens(key.id, key.tpm, -tokens)
            raise
        hold = Hold(key, reservation, tokens, None, decision.headers, waits=False)
        await self._hold_slot(hold, request_id)
        return hold

    async def _settle_counters(self, hold: Hold, cost: int, correction: int) -> None:
        key = hold.key
        await self.ledger.settle(hold.reservation, cost)
        await self.limiter.adjust_tokens(key.id, key.tpm, correction)
