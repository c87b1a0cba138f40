"""The key cache and the failure throttle on their own: unknown keys never push known ones out,
reads in flight count, and every map is bounded (the gateway-level floods: test_auth_flood.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sluice import auth as auth_module
from sluice.auth import KeyCache
from sluice.auth_throttle import FailureThrottle, address_bucket
from sluice.errors import AuthenticationFailed, RateLimited
from sluice.keys import KeyRecord, generate_key, hash_key, key_prefix

ADDRESS = "203.0.113.50"

# -- the cache itself: unknown keys never push known ones out ---------------------------------


def _record(secret: str) -> KeyRecord:
    return KeyRecord.build(
        id="k1", name="real", key_hash=hash_key(secret), prefix=key_prefix(secret),
        budget_micro=None, spent_micro=0, expires_at=None, allowed_models=[], allowed_ips=[],
        rpm=None, tpm=None, disabled=False, created_at=time.time(), last_used_at=None,
    )  # fmt: skip


class Store:
    def __init__(self, real: str) -> None:
        self.real = real
        self.reads: list[str] = []

    async def load(self, digest: str) -> KeyRecord | None:
        self.reads.append(digest)
        return _record(self.real) if digest == hash_key(self.real) else None


@pytest.mark.parametrize("flood", [100, 1_000, 5_000])
async def test_unknown_keys_cannot_evict_a_known_key(
    monkeypatch: pytest.MonkeyPatch, flood: int
) -> None:
    # The known-key map is bounded too; shrink it so the old shared map's eviction shows.
    monkeypatch.setattr(auth_module, "_MAX_ENTRIES", 50)
    real = generate_key()
    store = Store(real)
    cache = KeyCache(store.load, ttl_s=60)
    await cache.lookup(real)
    for _ in range(flood):
        with pytest.raises(AuthenticationFailed):
            await cache.lookup(generate_key())
    assert (await cache.lookup(real)).name == "real"
    assert store.reads.count(hash_key(real)) == 1  # never evicted, never re-read
    known, unknown = cache.sizes
    assert known == 1 and unknown <= 10_000


async def test_unknown_key_cache_is_bounded() -> None:
    store = Store(generate_key())
    cache = KeyCache(store.load, ttl_s=60, negative_ttl_s=60, negative_size=100)
    for _ in range(1_000):
        with pytest.raises(AuthenticationFailed):
            await cache.lookup(generate_key())
    assert cache.sizes == (0, 100)


async def test_concurrent_unknown_keys_from_one_address_are_bounded_while_in_flight() -> None:
    """The reads in flight count: 500 keys at once cannot all pass before one fails."""
    gate = asyncio.Event()
    reads = 0

    async def slow_load(digest: str) -> KeyRecord | None:
        nonlocal reads
        reads += 1
        await gate.wait()
        return None

    cache = KeyCache(slow_load, ttl_s=60, throttle=FailureThrottle(10, 60, 100))
    tasks = [asyncio.ensure_future(cache.lookup(generate_key(), ADDRESS)) for _ in range(500)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert reads == 10
    assert sum(isinstance(r, AuthenticationFailed) for r in results) == 10
    assert sum(isinstance(r, RateLimited) for r in results) == 490


# -- the throttle's own bounds --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, "-"),
        ("", "-"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_address_buckets(address: str | None, bucket: str) -> None:
    assert address_bucket(address) == bucket


def test_throttle_memory_is_bounded_by_tracked_addresses() -> None:
    throttle = FailureThrottle(max_failures=1, window_s=60, max_addresses=100)
    for i in range(5_000):
        throttle.record_failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle) == 100


def test_clean_reads_leave_nothing_behind() -> None:
    throttle = FailureThrottle(max_failures=5, window_s=60, max_addresses=100)
    for i in range(50):
        tally = throttle.begin(f"198.51.100.{i}")
        assert tally is not None
        throttle.end(tally, failed=False)
    assert len(throttle) == 0


def test_throttle_off_when_max_failures_is_zero() -> None:
    throttle = FailureThrottle(max_failures=0, window_s=60, max_addresses=100)
    for _ in range(100):
        throttle.record_failure(ADDRESS)
        throttle.check(ADDRESS)
    assert throttle.begin(ADDRESS) is None and len(throttle) == 0
