"""max_concurrent: requests in flight per key, shared through Redis or counted in process."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from sluice.concurrency import MemoryConcurrency
from sluice.redis_backend.client import RedisBackend
from sluice.redis_backend.concurrency import RedisConcurrency
from sluice.storage.db import create_engine
from sluice.storage.migrate import current_revision, upgrade_database
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI


async def test_leases_are_shared_across_replicas_and_expire(redis_url: str) -> None:
    backends = [RedisBackend(redis_url) for _ in range(3)]
    for backend in backends:
        await backend.start()
    try:
        limiters = [RedisConcurrency(b, lease_s=0.5) for b in backends]
        key_id = uuid.uuid4().hex
        leases = await asyncio.gather(
            *(limiters[i % 3].acquire(key_id, 5, f"r{i}") for i in range(50))
        )
        held = [lease for lease in leases if lease is not None]
        assert len(held) == 5
        await limiters[1].release(held[0])
        await limiters[1].release(held[0])  # idempotent
        assert await limiters[2].acquire(key_id, 5, "after-release") is not None
        assert await limiters[0].acquire(key_id, 5, "full") is None
        await asyncio.sleep(0.6)  # a crashed replica's leases expire
        assert await limiters[0].acquire(key_id, 5, "after-expiry") is not None
    finally:
        for backend in backends:
            await backend.close()


async def test_memory_concurrency_counts_per_key() -> None:
    limiter = MemoryConcurrency()
    first = await limiter.acquire("k", 1, "a")
    assert first is not None and await limiter.acquire("k", 1, "b") is None
    assert await limiter.acquire("other", 1, "c") is not None
    await limiter.release(first)
    assert await limiter.acquire("k", 1, "d") is not None


@pytest.mark.parametrize("shared", [True, False])
def test_gateway_enforces_max_concurrent(
    shared: bool,
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    redis_url: str,
) -> None:
    channel = openai_channel(fake_openai, headers={"x-fake-chunk-delay": "0.15"})
    extra = {"redis_url": redis_url} if shared else {}
    gateway = gateway_factory([channel], **extra)
    key = gateway.create_key("c", max_concurrent=2)
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}

    async def stream_one(client: httpx.AsyncClient) -> int:
        async with client.stream(
            "POST", f"{gateway.base_url}/chat/completions", json={**body, "stream": True},
            headers={"authorization": f"Bearer {key}"},
        ) as response:  # fmt: skip
            await response.aread()
            if response.status_code == 429:
                assert b"concurrency_limit_exceeded" in await response.aread()
            return response.status_code

    async def burst(count: int) -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(stream_one(client) for _ in range(count))))

    statuses = asyncio.run(burst(6))
    assert sorted(statuses) == [200, 200, 429, 429, 429, 429]
    gateway.flush()  # settlements (which give the slots back) have run
    assert sorted(asyncio.run(burst(2))) == [200, 200]


async def test_migration_0002_upgrades_an_existing_database(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        await upgrade_database(engine, "0001")
        assert await current_revision(engine) == "0001"
        await upgrade_database(engine, "0002")  # later migrations have their own tests
        assert await current_revision(engine) == "0002"
    finally:
        await engine.dispose()
