"""Budget admission shared by every replica: reservations and settlements as atomic Lua.

Redis holds, per key, ``spent`` and ``reserved`` (hash ``{sluice:key:<id>}:budget``) for the
admission decision only. PostgreSQL stays the source of truth for what was spent: the usage
sink writes each row and its ``spent_micro = spent_micro + cost`` in one transaction. The Redis
hash is seeded from a fresh database read when absent (the script refuses to reserve on a
missing hash and says so; the second call carries the seed and the script creates the hash
only if it is still absent, so concurrent seeders cannot double-count). The hash also holds
the leases of worker allowances (``allowance.py``); a request admitted from one settles against
its lease (``lease_id`` on the reservation). The scripts are in ``budget_scripts.py``.

Redis outage: budgets keep being enforced by a per-replica ``LocalLedger`` seeded from a fresh
read of ``spent_micro`` (so N replicas may together overshoot by at most the requests they
admit concurrently). On recovery, the Redis counters of every key touched during the outage are
dropped so they are re-seeded from the database, which by then holds the outage's spend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sluice.metering.quota import LocalLedger, Reservation, insufficient_quota
from sluice.redis_backend.budget_scripts import (
    BUDGET_TTL_S,
    RESERVE,
    SETTLE,
    SETTLE_LEASED,
    budget_keys,
)
from sluice.redis_backend.client import OUTAGE_ERRORS, RedisBackend, RedisUnavailable

__all__ = ["RedisLedger", "RedisReservation"]

log = logging.getLogger("sluice.redis")


@dataclass(slots=True)
class RedisReservation(Reservation):
    local: bool = False  # made by the outage fallback: settle there too
    lease_id: str | None = None  # admitted from a worker's allowance: settle against its lease


SpentLoader = Callable[[str], Awaitable[int | None]]


class RedisLedger:
    def __init__(self, backend: RedisBackend, load_spent: SpentLoader) -> None:
        self._backend = backend
        self._load_spent = load_spent
        self._fallback = LocalLedger()
        self._outage_keys: set[str] = set()  # Redis counters to drop on recovery
        self._local_seeded: set[str] = set()  # keys the fallback has read from the database
        self._seeding: dict[str, asyncio.Future[int]] = {}
        self._reserve = backend.client.register_script(RESERVE)
        self._settle = backend.client.register_script(SETTLE)
        self._settle_leased = backend.client.register_script(SETTLE_LEASED)
        backend.on_recovery(self._recovered)

    async def _fresh_spent(self, key_id: str, spent_in_db: int) -> int:
        try:
            loaded = await self._load_spent(key_id)
        except Exception as exc:  # noqa: BLE001 - the cached value is the best we have
            log.warning("could not read spent for key %s, using cached value: %s", key_id, exc)
            return spent_in_db
        return spent_in_db if loaded is None else loaded

    async def reserve(
        self, key_id: str, budget: int | None, spent_in_db: int, amount: int
    ) -> Reservation:
        try:
            result = await self._run_reserve(key_id, budget, amount, -1)
            if result[0] == -1:
                seed = await self._seed(key_id, spent_in_db)
                result = await self._run_reserve(key_id, budget, amount, seed)
        except RedisUnavailable:
            return await self._reserve_locally(key_id, budget, spent_in_db, amount)
        if result[0] == 0:
            assert budget is not None
            raise insufficient_quota(budget, result[1])
        return RedisReservation(key_id=key_id, amount=amount)

    async def _seed(self, key_id: str, spent_in_db: int) -> int:
        """One database read per key however many requests find the counter absent at once."""
        task = self._seeding.get(key_id)
        if task is None:
            task = asyncio.ensure_future(self._fresh_spent(key_id, spent_in_db))
            self._seeding[key_id] = task
            task.add_done_callback(lambda _: self._seeding.pop(key_id, None))
        return await asyncio.shield(task)

    async def _run_reserve(
        self, key_id: str, budget: int | None, amount: int, seed: int
    ) -> list[int]:
        args = [-1 if budget is None else budget, amount, seed, BUDGET_TTL_S]
        raw = await self._backend.script(self._reserve, budget_keys(key_id), args)
        return [int(v) for v in raw]

    async def _reserve_locally(
        self, key_id: str, budget: int | None, spent_in_db: int, amount: int
    ) -> Reservation:
        if key_id not in self._local_seeded:
            spent_in_db = await self._fresh_spent(key_id, spent_in_db)
            self._local_seeded.add(key_id)
        self._outage_keys.add(key_id)
        held = await self._fallback.reserve(key_id, budget, spent_in_db, amount)
        return RedisReservation(key_id=key_id, amount=held.amount, local=True)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        if isinstance(reservation, RedisReservation) and reservation.local:
            await self._fallback.settle(Reservation(reservation.key_id, reservation.amount), actual)
            return
        keys = budget_keys(reservation.key_id)
        lease_id = reservation.lease_id if isinstance(reservation, RedisReservation) else None
        try:
            if lease_id is None:
                await self._backend.script(self._settle, keys[:1], [reservation.amount, actual])
            else:
                args = [lease_id, reservation.amount, actual]
                await self._backend.script(self._settle_leased, keys, args)
        except RedisUnavailable:
            self.lost_update(reservation.key_id)

    def lost_update(self, key_id: str) -> None:
        """A change to the key's Redis counter could not be made (outage): the counter is stale
        and is dropped on recovery, to be re-seeded from the database."""
        self._outage_keys.add(key_id)

    async def release(self, reservation: Reservation) -> None:
        await self.settle(reservation, 0)

    async def forget(self, key_id: str) -> None:
        """Spend reset or key deleted: drop the shared counter, re-seeded on next use."""
        await self.forget_local(key_id)
        try:
            await self._backend.call(lambda: self._backend.client.delete(budget_keys(key_id)[0]))
        except RedisUnavailable:
            self._outage_keys.add(key_id)

    async def forget_local(self, key_id: str) -> None:
        """Another replica changed the key: only this replica's outage counters go."""
        await self._fallback.forget(key_id)
        self._local_seeded.discard(key_id)

    async def spent(self, key_id: str, spent_in_db: int) -> int:
        try:
            value = await self._backend.call(
                lambda: self._backend.client.hget(budget_keys(key_id)[0], "spent")
            )
        except RedisUnavailable:
            return await self._fallback.spent(key_id, spent_in_db)
        return spent_in_db if value is None else int(value)

    async def _recovered(self) -> None:
        stale, self._outage_keys = self._outage_keys, set()
        # Outage spend is in the database (usage sink), not in Redis: re-seed those keys.
        self._fallback = LocalLedger()
        self._local_seeded = set()
        if stale:
            try:
                for key_id in sorted(stale):  # one by one: keys live in different Cluster slots
                    await self._backend.client.delete(budget_keys(key_id)[0])
            except OUTAGE_ERRORS:
                self._outage_keys |= stale
                raise
            log.info("re-seeding budget counters of %d keys after the redis outage", len(stale))
