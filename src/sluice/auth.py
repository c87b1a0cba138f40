"""Key authentication with a short-lived in-memory cache (the database is not hit per request).

Unknown keys are cached negatively for a moment too, in a bounded map, so a flood of random keys
costs one lookup each at most per TTL and cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

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
    ) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._entries: OrderedDict[str, tuple[KeyRecord | None, float]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def lookup(self, secret: str) -> KeyRecord:
        if not looks_like_key(secret):
            raise AuthenticationFailed("Incorrect API key provided. Sluice keys start with 'sk-'.")
        digest = hash_key(secret)
        entry = self._entries.get(digest)
        now = time.monotonic()
        if entry is not None and entry[1] > now:
            record = entry[0]
        elif entry is not None and entry[0] is not None and entry[1] + self._ttl_s > now:
            record = entry[0]
            if digest not in self._loading:
                self._start_load(digest).add_done_callback(_consume_exception)
        else:
            pending = self._loading.get(digest) or self._start_load(digest)
            record = await asyncio.shield(pending)
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return record

    def _start_load(self, digest: str) -> asyncio.Future[KeyRecord | None]:
        task = asyncio.get_running_loop().create_task(self._load_into_cache(digest))
        self._loading[digest] = task
        return task

    async def _load_into_cache(self, digest: str) -> KeyRecord | None:
        this_load = asyncio.current_task()
        try:
            record = await self._load(digest)
        finally:
            current = self._loading.get(digest) is this_load
            if current:
                self._loading.pop(digest)
        if current:  # not invalidated meanwhile: what was read is still the latest
            ttl = self._ttl_s if record is not None else self._negative_ttl_s
            self._entries[digest] = (record, time.monotonic() + ttl)
            self._entries.move_to_end(digest)
            while len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)
        return record

    def invalidate(self, key_hash: str | None = None) -> None:
        # A load already in flight may have read the old row: it is left to finish for its
        # waiters, but it no longer feeds later lookups, which start a fresh one.
        if key_hash is None:
            self._entries.clear()
            self._loading.clear()
        else:
            self._entries.pop(key_hash, None)
            self._loading.pop(key_hash, None)
