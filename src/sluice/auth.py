"""Key authentication with a short-lived in-memory cache (the database is not hit per request).

Unknown keys are cached negatively for a moment too, in a bounded map, so a flood of random keys
costs one lookup each at most per TTL and cannot grow memory without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from sluice.errors import AuthenticationFailed, PermissionDenied
from sluice.keys import KeyRecord, hash_key, looks_like_key

__all__ = ["KeyCache", "extract_key", "check_key"]

_MAX_ENTRIES = 100_000


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

    async def lookup(self, secret: str) -> KeyRecord:
        if not looks_like_key(secret):
            raise AuthenticationFailed("Incorrect API key provided. Sluice keys start with 'sk-'.")
        digest = hash_key(secret)
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry[1] > now:
            record = entry[0]
        else:
            record = await self._load(digest)
            ttl = self._ttl_s if record is not None else self._negative_ttl_s
            self._entries[digest] = (record, now + ttl)
            self._entries.move_to_end(digest)
            while len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return record

    def invalidate(self, key_hash: str | None = None) -> None:
        if key_hash is None:
            self._entries.clear()
        else:
            self._entries.pop(key_hash, None)
