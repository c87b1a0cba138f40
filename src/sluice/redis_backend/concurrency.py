"""Concurrent-request limits shared by every replica: leases in a sorted set, atomic Lua.

Each in-flight request is a member (its request id) of ``{sluice:key:<id>}:inflight`` scored
with its lease expiry (Redis ``TIME`` + lease). Acquire drops expired leases, then adds one only
if fewer than ``limit`` remain; release removes it. A replica that dies mid-request leaks its
leases only until they expire (the lease outlives ``timeouts.total_s``, the longest a request may
run). Redis outage: per-replica counting ("open") or 503 for keys with a limit ("closed").
"""

from __future__ import annotations

from sluice.concurrency import Lease, MemoryConcurrency
from sluice.errors import ServiceUnavailable
from sluice.redis_backend.client import RedisBackend, RedisUnavailable, key_tag

__all__ = ["RedisConcurrency"]

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
return 1
"""


class RedisConcurrency:
    def __init__(self, backend: RedisBackend, lease_s: float) -> None:
        self._backend = backend
        self._lease_s = lease_s
        self._fallback = MemoryConcurrency()
        self._acquire = backend.client.register_script(_ACQUIRE)

    @staticmethod
    def _key(key_id: str) -> str:
        return f"{key_tag(key_id)}:inflight"

    async def acquire(self, key_id: str, limit: int, request_id: str) -> Lease | None:
        args: list[str | int | float] = [limit, request_id, self._lease_s]
        try:
            got = await self._backend.script(self._acquire, [self._key(key_id)], list(args))
        except RedisUnavailable:
            if self._backend.policy == "closed":
                raise ServiceUnavailable(
                    "Concurrency limiting is temporarily unavailable (shared limiter "
                    "unreachable); retry shortly.",
                    code="rate_limiter_unavailable",
                    headers={"retry-after": "1"},
                ) from None
            return await self._fallback.acquire(key_id, limit, request_id)
        return Lease(key_id, request_id, local=False) if int(got) == 1 else None

    async def acquire_local(self, key_id: str, limit: int, request_id: str) -> Lease | None:
        # Local leases are released to the same in-process counter (``lease.local``).
        return await self._fallback.acquire(key_id, limit, request_id)

    async def release(self, lease: Lease) -> None:
        if lease.local:
            await self._fallback.release(lease)
            return
        if lease.released:
            return
        lease.released = True
        try:
            await self._backend.call(
                lambda: self._backend.client.zrem(self._key(lease.key_id), lease.request_id)
            )
        except RedisUnavailable:
            pass  # the lease expires on its own
