"""Key authentication with a short-lived in-memory cache (the database is not hit per request).

Known keys and unknown keys live in two separate bounded maps: only a database row can enter
the first, so a flood of random keys cannot evict a real one, and the second (unknown keys,
cached for a short while) holds at most ``negative_size`` entries. What bounds the database
reads a flood of *distinct* random keys costs is the per-address failure throttle
(``auth_throttle.py``), consulted only when a read is about to start.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from sluice.auth_throttle import FailureThrottle, Tally
from sluice.errors import AuthenticationFailed, PermissionDenied
from sluice.keys import KeyRecord, hash_key, looks_like_key

__all__ = ["KeyCache", "extract_key", "check_key"]

_MAX_ENTRIES = 100_000


def _consume_exception(task: asyncio.Future[KeyRecord | None]) -> None:
    # A failed background refresh is not an error for anyone: the stale entry stays in use
    # until it is too old, and then the next lookup loads again and reports the failure.
    if not task.cancelled():
        task.exception()


def extract_key(authorization: str | None, api_key_header: str | None) -> str:
    """The bearer token from ``Authorization`` or the ``x-api-key``/``api-key`` header."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer sk-...'.")
        return token.strip()
    if api_key_header:
        return api_key_header.strip()
    raise AuthenticationFailed(
        "You didn't provide an API key. Provide it in the Authorization header "
        "('Authorization: Bearer sk-...').",
        code="missing_api_key",
    )


def check_key(record: KeyRecord, client_ip: str | None) -> None:
    if record.disabled:
        raise AuthenticationFailed("This API key has been disabled.", code="key_disabled")
    if record.is_expired():
        raise AuthenticationFailed("This API key has expired.", code="key_expired")
    if not record.allows_ip(client_ip):
        raise PermissionDenied(
            "This API key may not be used from your IP address.", code="ip_not_allowed"
        )


class KeyCache:
    """Hash -> key record, refreshed from the database at most once per TTL per key.

    Concurrent requests never stampede the database: one load per key is in flight at a time
    and the others await it (single flight). A known key whose entry has just expired keeps
    being served from the cache while one background load refreshes it (stale while
    revalidate), for at most ``ttl_s`` longer; so under load no request waits for the
    database, and an admin change still reaches every worker within two TTLs (at once where
    the change is announced: see ``invalidate``).
    """

    def __init__(
        self,
        load: Callable[[str], Awaitable[KeyRecord | None]],
        ttl_s: float,
        negative_ttl_s: float = 1.0,
        negative_size: int = 10_000,
        throttle: FailureThrottle | None = None,
    ) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._negative_size = negative_size
        self._throttle = throttle
        self._entries: OrderedDict[str, tuple[KeyRecord, float]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()  # hash -> expiry (monotonic)
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def lookup(self, secret: str, client: str | None = None) -> KeyRecord:
        """The key's record; ``client`` (its address) is what failed reads are counted by."""
        if not looks_like_key(secret):
            raise AuthenticationFailed("Incorrect API key provided. Sluice keys start with 'sk-'.")
        digest = hash_key(secret)
        entry = self._entries.get(digest)
        now = time.monotonic()
        if entry is not None and entry[1] > now:
            return entry[0]
        if entry is not None and entry[1] + self._ttl_s > now:
            if digest not in self._loading:
                self._start_load(digest, None).add_done_callback(_consume_exception)
            return entry[0]
        record = await self._load_or_join(digest, client, now)
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return record

    async def _load_or_join(self, digest: str, client: str | None, now: float) -> KeyRecord | None:
        pending = self._loading.get(digest)
        if pending is None:
            expiry = self._unknown.get(digest)
            if expiry is not None and expiry > now:
                return None  # known to be unknown: no read, and nothing to count
            # Only a read that is about to start consults the throttle: a throttled address
            # still gets cached keys and joins reads already in flight, at no cost.
            tally = self._throttle.begin(client) if self._throttle is not None else None
            pending = self._start_load(digest, tally)
        return await asyncio.shield(pending)

    def _start_load(self, digest: str, tally: Tally | None) -> asyncio.Future[KeyRecord | None]:
        task = asyncio.get_running_loop().create_task(self._load_into_cache(digest, tally))
        self._loading[digest] = task
        return task

    async def _load_into_cache(self, digest: str, tally: Tally | None) -> KeyRecord | None:
        this_load = asyncio.current_task()
        record: KeyRecord | None = None
        failed = False
        try:
            record = await self._load(digest)
            failed = record is None
        finally:
            if tally is not None and self._throttle is not None:
                self._throttle.end(tally, failed)  # a database error is not the client's fault
            current = self._loading.get(digest) is this_load
            if current:
                self._loading.pop(digest)
        if current:  # not invalidated meanwhile: what was read is still the latest
            if record is not None:
                self._remember(digest, record)
            else:
                self._remember_unknown(digest)
        return record

    def _remember(self, digest: str, record: KeyRecord) -> None:
        self._unknown.pop(digest, None)
        self._entries[digest] = (record, time.monotonic() + self._ttl_s)
        self._entries.move_to_end(digest)
        while len(self._entries) > _MAX_ENTRIES:
            self._entries.popitem(last=False)

    def _remember_unknown(self, digest: str) -> None:
        self._entries.pop(digest, None)  # a refresh found the key deleted
        self._unknown[digest] = time.monotonic() + self._negative_ttl_s
        self._unknown.move_to_end(digest)
        while len(self._unknown) > self._negative_size:
            self._unknown.popitem(last=False)

    def invalidate(self, key_hash: str | None = None) -> None:
        # A load already in flight may have read the old row: it is left to finish for its
        # waiters, but it no longer feeds later lookups, which start a fresh one.
        if key_hash is None:
            self._entries.clear()
            self._unknown.clear()
            self._loading.clear()
        else:
            self._entries.pop(key_hash, None)
            self._unknown.pop(key_hash, None)
            self._loading.pop(key_hash, None)

    def cached(self, key_hash: str) -> bool:
        """Whether a known key's record is held (tests and diagnostics)."""
        return key_hash in self._entries

    @property
    def sizes(self) -> tuple[int, int]:
        """(known keys held, unknown keys held)."""
        return len(self._entries), len(self._unknown)
