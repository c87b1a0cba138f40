"""What ``build_state`` uses when ``redis_url`` is set, and what the CLI uses to notify replicas.

``RedisServices`` owns the connection, the shared limiter and ledger and the invalidation
listener; it is created with the state and started/closed by the application lifespan.
"""

from __future__ import annotations

import logging
from typing import Literal

import redis.asyncio as redis

from sluice.admission.shared import SharedAdmission
from sluice.auth import KeyCache
from sluice.limits import MemoryRateLimiter
from sluice.redis_backend.allowance import AllowancePolicy, Allowances
from sluice.redis_backend.circuit import CIRCUIT_CHANNEL, CircuitSync
from sluice.redis_backend.client import OUTAGE_ERRORS, RedisBackend, RedisUnavailable
from sluice.redis_backend.concurrency import RedisConcurrency
from sluice.redis_backend.invalidation import (
    InvalidationListener,
    KeyChange,
    publish_key_change,
)
from sluice.redis_backend.ledger import RedisLedger, SpentLoader
from sluice.redis_backend.limiter import RedisRateLimiter

__all__ = ["RedisServices", "notify_key_change"]

log = logging.getLogger("sluice.redis")


class RedisServices:
    def __init__(
        self,
        url: str,
        policy: Literal["open", "closed"],
        load_spent: SpentLoader,
        *,
        lease_s: float = 960.0,
        allowances: bool = True,
    ) -> None:
        self.backend = RedisBackend(url, policy)
        self.concurrency = RedisConcurrency(self.backend, lease_s)
        self.limiter = RedisRateLimiter(self.backend, MemoryRateLimiter())
        self.ledger = RedisLedger(self.backend, load_spent)
        # None: every request is admitted with its own round trip (exact at every replica).
        self.allowances = (
            Allowances(self.backend, self.ledger, AllowancePolicy(lease_ttl_s=lease_s))
            if allowances
            else None
        )
        self.admission = SharedAdmission(
            self.limiter, self.ledger, self.concurrency, self.allowances
        )
        self.circuit = CircuitSync(self.backend)  # attach() the replica's health object
        self._key_cache: KeyCache | None = None
        self._listener = InvalidationListener(
            url, self.apply_key_change, extra={CIRCUIT_CHANNEL: self.circuit.on_message}
        )

    async def apply_key_change(self, change: KeyChange) -> None:
        """A key changed elsewhere (pub/sub, or the database change log): drop what this
        replica holds of it. ``key_hash`` None drops every cached key."""
        if self._key_cache is not None:
            self._key_cache.invalidate(change.key_hash)
        if change.key_id is not None:
            await self.ledger.forget_local(change.key_id)
            if self.allowances is not None:
                self.allowances.key_changed(change.key_id)

    async def start(self, key_cache: KeyCache) -> None:
        self._key_cache = key_cache
        await self.backend.start()
        await self._listener.start()
        if self.allowances is not None:
            self.allowances.start()

    async def close(self) -> None:
        await self._listener.close()
        if self.allowances is not None:
            await self.allowances.close()  # unused allowances go back before the connection
        await self.backend.close()

    async def publish_key_change(self, key_hash: str, key_id: str) -> None:
        """Tell every replica; a Redis outage is logged, the TTL then bounds staleness."""
        try:
            await self.backend.call(
                lambda: publish_key_change(self.backend.client, key_hash, key_id)
            )
        except RedisUnavailable:
            log.warning("key %s changed but redis is down: other replicas see it within the "
                        "key cache TTL", key_id)  # fmt: skip


async def notify_key_change(url: str, key_hash: str, key_id: str, *, drop_budget: bool) -> bool:
    """For the CLI: publish one key change (and drop its shared budget counter when its spend
    was reset or it was deleted). Returns False when Redis could not be reached."""
    from sluice.redis_backend.client import key_tag

    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        if drop_budget:
            await client.delete(f"{key_tag(key_id)}:budget")
        await publish_key_change(client, key_hash, key_id)
        return True
    except OUTAGE_ERRORS:
        return False
    finally:
        await client.aclose()
