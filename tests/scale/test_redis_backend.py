"""Redis limiter, ledger and invalidation across several "replicas" (separate connections)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest

from sluice.auth import KeyCache
from sluice.errors import InsufficientQuota, ServiceUnavailable
from sluice.keys import KeyRecord, hash_key
from sluice.metering.quota import Reservation
from sluice.redis_backend.client import RedisBackend
from sluice.redis_backend.ledger import RedisLedger
from sluice.redis_backend.limiter import RedisRateLimiter
from sluice.redis_backend.wiring import RedisServices, notify_key_change
from tests.scale.conftest import PrivateRedis, wait_until


@pytest.fixture
async def backends(redis_url: str) -> AsyncIterator[list[RedisBackend]]:
    created = [RedisBackend(redis_url) for _ in range(3)]
    for backend in created:
        await backend.start()
    yield created
    for backend in created:
        await backend.close()


async def test_60_rpm_key_gets_exactly_60_of_200_across_3_replicas(
    backends: list[RedisBackend],
) -> None:
    limiters = [RedisRateLimiter(b) for b in backends]
    key_id = uuid.uuid4().hex
    decisions = await asyncio.gather(
        *(limiters[i % 3].admit(key_id, 60, None, 10) for i in range(200))
    )
    assert sum(d.allowed for d in decisions) == 60
    refused = next(d for d in decisions if not d.allowed)
    assert refused.exceeded == "requests" and refused.retry_after_s > 0
    assert refused.headers["x-ratelimit-limit-requests"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


async def test_tpm_is_shared_and_adjusted(backends: list[RedisBackend]) -> None:
    limiters = [RedisRateLimiter(b) for b in backends]
    key_id = uuid.uuid4().hex
    decisions = [await limiters[i % 3].admit(key_id, None, 1000, 300) for i in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert decisions[3].exceeded == "tokens"
    # Settlement gives back what the reservations over-estimated: room for more.
    await limiters[1].adjust_tokens(key_id, 1000, -600)
    assert (await limiters[2].admit(key_id, None, 1000, 300)).allowed


async def test_budget_is_exact_across_3_replicas_and_seeded_from_the_database(
    backends: list[RedisBackend],
) -> None:
    key_id = uuid.uuid4().hex
    loads: list[str] = []

    async def load_spent(kid: str) -> int:
        loads.append(kid)
        return 400  # what PostgreSQL says was spent before Redis knew the key

    ledgers = [RedisLedger(b, load_spent) for b in backends]

    async def try_reserve(i: int) -> Reservation | None:
        try:
            return await ledgers[i % 3].reserve(key_id, 1000, 0, 30)
        except InsufficientQuota:
            return None

    # Phase 1: 100 concurrent reservations, none settled: exactly the ones that fit.
    held = [r for r in await asyncio.gather(*(try_reserve(i) for i in range(100))) if r]
    assert len(held) == (1000 - 400) // 30
    await asyncio.gather(*(ledgers[(i + 1) % 3].settle(r, 25) for i, r in enumerate(held)))
    spent = await ledgers[0].spent(key_id, 0)
    assert spent == 400 + 25 * len(held)
    # Phase 2: what is left (1000 - 900) admits exactly three more of 30.
    held = [r for r in await asyncio.gather(*(try_reserve(i) for i in range(100))) if r]
    assert len(held) == (1000 - spent) // 30
    assert 1 <= len(loads) <= 3  # one database read per replica, not one per request
    with pytest.raises(InsufficientQuota):
        await ledgers[2].reserve(key_id, 1000, 0, 1000 - spent + 1)
    await ledgers[0].forget(key_id)  # spend reset by an admin: re-seeded on next use
    await ledgers[1].reserve(key_id, 1000, 0, 1)
    assert await ledgers[2].spent(key_id, 0) == 400


async def test_redis_outage_falls_back_and_recovers(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    spent_in_db = {"value": 100}

    async def load_spent(_: str) -> int:
        return spent_in_db["value"]

    open_backend = RedisBackend(private_redis.url, "open", probe_interval_s=0.1)
    closed_backend = RedisBackend(private_redis.url, "closed", probe_interval_s=0.1)
    for backend in (open_backend, closed_backend):
        await backend.start()
    try:
        open_limiter = RedisRateLimiter(open_backend)
        closed_limiter = RedisRateLimiter(closed_backend)
        ledger = RedisLedger(open_backend, load_spent)
        key_id = uuid.uuid4().hex
        held = await ledger.reserve(key_id, 1000, 0, 100)
        assert (await open_limiter.admit(key_id, 5, None, 1)).allowed

        private_redis.kill()
        with caplog.at_level(logging.ERROR, logger="sluice.redis"):
            for _ in range(3):
                decision = await open_limiter.admit(key_id, 5, None, 1)  # per-replica memory
                assert decision.allowed
            with pytest.raises(ServiceUnavailable):
                await closed_limiter.admit(key_id, 5, None, 1)
            assert (await closed_limiter.admit(key_id, None, None, 1)).allowed  # no limits
            await ledger.settle(held, 100)  # lost in Redis: key re-seeded after recovery
            spent_in_db["value"] = 200  # the sink wrote that settlement to the database
            local = await ledger.reserve(key_id, 1000, 0, 700)  # budget from the database
            with pytest.raises(InsufficientQuota):
                await ledger.reserve(key_id, 1000, 0, 101)
            await ledger.settle(local, 700)
            spent_in_db["value"] = 900
        outage_lines = [r for r in caplog.records if "redis unreachable" in r.getMessage()]
        assert len(outage_lines) == 2  # one line per backend, not one per request

        private_redis.start()
        assert await wait_until(lambda: open_backend.healthy and closed_backend.healthy, 5)
        assert (await closed_limiter.admit(key_id, 5, None, 1)).allowed
        # Re-seeded from the database (900), not the stale Redis counter (100 + 100 held).
        assert await ledger.spent(key_id, 0) in (0, 900)
        await ledger.reserve(key_id, 1000, 0, 100)
        with pytest.raises(InsufficientQuota):
            await ledger.reserve(key_id, 1000, 0, 1)
    finally:
        await open_backend.close()
        await closed_backend.close()


def _record(key_id: str, key_hash: str) -> KeyRecord:
    return KeyRecord.build(
        id=key_id, name="k", key_hash=key_hash, prefix="sk-x", budget_micro=None,
        spent_micro=0, expires_at=None, allowed_models=(), allowed_ips=(), rpm=None, tpm=None,
        disabled=False, created_at=0.0, last_used_at=None,
    )  # fmt: skip


async def test_key_changes_reach_every_replica_within_one_second(redis_url: str) -> None:
    secret = "sk-" + uuid.uuid4().hex
    key_id, key_hash = uuid.uuid4().hex, hash_key(secret)
    loads = [0, 0, 0]

    def loader(i: int):  # type: ignore[no-untyped-def]
        async def load(_: str) -> KeyRecord:
            loads[i] += 1
            return _record(key_id, key_hash)

        return load

    async def no_spent(_: str) -> int:
        return 0

    caches = [KeyCache(loader(i), ttl_s=3600) for i in range(3)]
    replicas = [RedisServices(redis_url, "open", no_spent) for _ in range(3)]
    try:
        for cache, replica in zip(caches, replicas, strict=True):
            await replica.start(cache)
        for cache in caches:
            await cache.lookup(secret)
        assert loads == [1, 1, 1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await replicas[0].publish_key_change(key_hash, key_id)

        async def all_reloaded() -> bool:
            for cache in caches:
                await cache.lookup(secret)
            return loads == [2, 2, 2]

        assert await wait_until(all_reloaded, 1.0, 0.01)
        assert loop.time() - started < 1.0
        # The CLI path: a one-shot publish from outside any replica.
        assert await notify_key_change(redis_url, key_hash, key_id, drop_budget=True)
        assert await wait_until(lambda: _reloaded_to(caches, secret, loads, 3), 1.0, 0.01)
    finally:
        for replica in replicas:
            await replica.close()


async def _reloaded_to(caches: list[KeyCache], secret: str, loads: list[int], n: int) -> bool:
    for cache in caches:
        await cache.lookup(secret)
    return loads == [n, n, n]


async def test_channel_disable_and_enable_reach_other_replicas(redis_url: str) -> None:
    from sluice.health import MemoryChannelHealth
    from sluice.settings import CircuitConfig

    async def no_spent(_: str) -> int:
        return 0

    replicas = [RedisServices(redis_url, "open", no_spent) for _ in range(2)]
    healths = [
        MemoryChannelHealth(CircuitConfig(), on_change=replica.circuit.local_change)
        for replica in replicas
    ]
    try:
        for replica, health in zip(replicas, healths, strict=True):
            replica.circuit.attach(health)
            await replica.start(KeyCache(lambda _: asyncio.sleep(0, None), ttl_s=1))
        channel = f"ch-{uuid.uuid4().hex[:8]}"
        # Dead upstream key on replica 0, confirmed by its health probe.
        healths[0].disable(channel, "upstream auth failure, confirmed by a health probe")
        assert not healths[0].available(channel, "m")
        assert await wait_until(lambda: not healths[1].available(channel, "m"), 1.0)
        assert healths[1].disabled_channels() == [channel]
        healths[1].enable(channel)  # an admin re-enables it through replica 1
        assert await wait_until(lambda: healths[0].available(channel, "m"), 1.0)
    finally:
        for replica in replicas:
            await replica.close()
