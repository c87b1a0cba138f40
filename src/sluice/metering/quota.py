"""Budget accounting: reserve before the call, settle to the real cost after, release on failure.

``LocalLedger`` keeps exact per-key counters in this process (the embedded default runs one
worker). Reserving is a check-and-add with no ``await`` in between, so concurrent requests on the
event loop cannot both pass a check that only one of them fits. A shared implementation for many
replicas (Redis) satisfies the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sluice.errors import InsufficientQuota

__all__ = ["BudgetLedger", "LocalLedger", "Reservation", "insufficient_quota"]


@dataclass(slots=True)
class Reservation:
    key_id: str
    amount: int  # micro-dollars held
    settled: bool = False


def insufficient_quota(budget: int, committed: int) -> InsufficientQuota:
    remaining = max(budget - committed, 0)
    return InsufficientQuota(
        "This key's budget cannot cover the request "
        f"(remaining ${remaining / 1_000_000:.6f} of ${budget / 1_000_000:.6f}, including "
        "requests in flight). Lower max_tokens or ask for a larger budget.",
    )


class BudgetLedger(Protocol):
    async def reserve(
        self, key_id: str, budget: int | None, spent_in_db: int, amount: int
    ) -> Reservation: ...

    async def settle(self, reservation: Reservation, actual: int) -> None: ...

    async def release(self, reservation: Reservation) -> None: ...

    async def forget(self, key_id: str) -> None: ...

    async def spent(self, key_id: str, spent_in_db: int) -> int: ...


@dataclass(slots=True)
class _Account:
    spent: int
    reserved: int = 0


class LocalLedger:
    """Exact in-process budget counters, seeded from the database on first use of a key."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}

    def _account(self, key_id: str, spent_in_db: int) -> _Account:
        account = self._accounts.get(key_id)
        if account is None:
            account = self._accounts[key_id] = _Account(spent=spent_in_db)
        return account

    async def reserve(
        self, key_id: str, budget: int | None, spent_in_db: int, amount: int
    ) -> Reservation:
        account = self._account(key_id, spent_in_db)
        if budget is not None:
            committed = account.spent + account.reserved
            # A request is admitted only if its worst case fits; so concurrent requests can
            # never push the key past its budget by more than one request's underestimate.
            if committed + amount > budget or committed >= budget:
                raise insufficient_quota(budget, committed)
        account.reserved += amount
        return Reservation(key_id=key_id, amount=amount)

    def committed(self, key_id: str, spent_in_db: int) -> int:
        """Spent plus reserved (in flight), as ``reserve`` compares it with the budget."""
        account = self._accounts.get(key_id)
        return spent_in_db if account is None else account.spent + account.reserved

    async def settle(self, reservation: Reservation, actual: int) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        account = self._accounts.get(reservation.key_id)
        if account is None:
            return
        account.reserved -= reservation.amount
        account.spent += actual

    async def release(self, reservation: Reservation) -> None:
        await self.settle(reservation, 0)

    async def forget(self, key_id: str) -> None:
        """Drop the counters (key deleted, or its spend reset by an admin)."""
        account = self._accounts.get(key_id)
        if account is not None and account.reserved == 0:
            del self._accounts[key_id]

    async def spent(self, key_id: str, spent_in_db: int) -> int:
        account = self._accounts.get(key_id)
        return spent_in_db if account is None else account.spent
