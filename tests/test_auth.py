"""The key cache never stampedes the database and never makes a request wait on a refresh.

Under load every worker sees its cached entry expire every TTL; before single flight and
stale-while-revalidate, 64 concurrent requests each queued a database read at that moment and
some of them timed out as 503 behind the usage writer (SQLite).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sluice.auth import KeyCache
from sluice.errors import AuthenticationFailed, ServiceUnavailable
from sluice.keys import KeyRecord, generate_key, hash_key, key_prefix

SECRET = generate_key()


def _record(name: str) -> KeyRecord:
    return KeyRecord.build(
        id="k1",
        name=name,
        key_hash=hash_key(SECRET),
        prefix=key_prefix(SECRET),
        budget_micro=None,
        spent_micro=0,
        expires_at=None,
        allowed_models=[],
        allowed_ips=[],
        rpm=None,
        tpm=None,
        max_concurrent=None,
        disabled=False,
        created_at=time.time(),
        last_used_at=None,
    )


class SlowStore:
    """A loader that takes ``delay_s`` per read and counts reads; its row can be changed."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.reads = 0
        self.name = "v1"
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def load(self, digest: str) -> KeyRecord | None:
        self.reads += 1
        name = self.name  # what the row said when the read started
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ServiceUnavailable("database down")
        return _record(name) if digest == hash_key(SECRET) else None


async def test_concurrent_cold_lookups_share_one_read() -> None:
    store = SlowStore(0.05)
    cache = KeyCache(store.load, ttl_s=60)
    records = await asyncio.gather(*(cache.lookup(SECRET) for _ in range(64)))
    assert store.reads == 1
    assert {r.name for r in records} == {"v1"}


async def test_expired_entry_is_served_while_one_refresh_runs() -> None:
    store = SlowStore(0.2)
    cache = KeyCache(store.load, ttl_s=0.05)
    await cache.lookup(SECRET)
    await asyncio.sleep(0.06)  # expired, but within the stale allowance
    store.name = "v2"
    started = time.perf_counter()
    records = await asyncio.gather(*(cache.lookup(SECRET) for _ in range(64)))
    waited = time.perf_counter() - started
    assert waited < 0.1, f"requests waited {waited:.3f}s for a refresh"
    assert {r.name for r in records} == {"v1"}
    assert store.reads == 2  # the first load and exactly one refresh
    await asyncio.sleep(0.25)
    assert (await cache.lookup(SECRET)).name == "v2"
    assert store.reads == 2


async def test_entry_too_old_is_not_served_stale() -> None:
    store = SlowStore(0.0)
    cache = KeyCache(store.load, ttl_s=0.05)
    await cache.lookup(SECRET)
    store.name = "v2"
    await asyncio.sleep(0.12)  # older than two TTLs: must wait for the fresh row
    assert (await cache.lookup(SECRET)).name == "v2"


async def test_invalidation_during_a_load_does_not_cache_the_old_row() -> None:
    store = SlowStore(0.0)
    store.gate = asyncio.Event()
    cache = KeyCache(store.load, ttl_s=60)
    first = asyncio.ensure_future(cache.lookup(SECRET))
    await asyncio.sleep(0.01)  # the load has read "v1" and is waiting
    store.name = "v2"  # the admin changes the key ...
    cache.invalidate(hash_key(SECRET))  # ... and announces it
    store.gate.set()
    assert (await first).name == "v1"  # the request already in flight sees what it read
    assert (await cache.lookup(SECRET)).name == "v2"
    assert store.reads == 2


async def test_failed_background_refresh_keeps_the_stale_entry_then_reports() -> None:
    store = SlowStore(0.0)
    cache = KeyCache(store.load, ttl_s=0.05)
    await cache.lookup(SECRET)
    store.fail = True
    await asyncio.sleep(0.06)
    assert (await cache.lookup(SECRET)).name == "v1"  # stale, refresh fails in background
    await asyncio.sleep(0.01)
    assert (await cache.lookup(SECRET)).name == "v1"
    await asyncio.sleep(0.06)  # now too old: the failure reaches the caller
    with pytest.raises(ServiceUnavailable):
        await cache.lookup(SECRET)


async def test_unknown_keys_are_cached_negatively_and_refused() -> None:
    store = SlowStore(0.0)
    cache = KeyCache(store.load, ttl_s=60)
    other = generate_key()
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            await cache.lookup(other)
    assert store.reads == 1
