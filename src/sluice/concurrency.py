"""Per-key limit on requests in flight at once (``max_concurrent``).

A request takes a lease at admission and gives it back when it is settled (settlement happens
exactly once per admitted request, whatever the outcome). ``MemoryConcurrency`` counts in this
process (the embedded default); the Redis implementation shares the count between replicas.
Keys without their own limit get ``limits.default_max_concurrent`` per worker, counted locally
even with Redis: a guard against one tenant taking a worker, not worth a round trip per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["ConcurrencyLimiter", "Lease", "MemoryConcurrency"]


@dataclass(slots=True)
class Lease:
    key_id: str
    request_id: str
    local: bool = True  # held in this process (memory, or the Redis outage fallback)
    released: bool = False


class ConcurrencyLimiter(Protocol):
    async def acquire(self, key_id: str, limit: int, request_id: str) -> Lease | None: ...

    async def acquire_local(self, key_id: str, limit: int, request_id: str) -> Lease | None:
        """A slot counted in this process only (the default cap of keys without their own)."""
        ...

    async def release(self, lease: Lease) -> None: ...


class MemoryConcurrency:
    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    async def acquire(self, key_id: str, limit: int, request_id: str) -> Lease | None:
        held = self._in_flight.get(key_id, 0)
        if held >= limit:
            return None
        self._in_flight[key_id] = held + 1
        return Lease(key_id, request_id)

    acquire_local = acquire

    async def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        held = self._in_flight.get(lease.key_id, 0) - 1
        if held > 0:
            self._in_flight[lease.key_id] = held
        else:
            self._in_flight.pop(lease.key_id, None)
