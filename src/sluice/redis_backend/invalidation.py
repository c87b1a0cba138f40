"""Key changes reach every replica within a second: Redis pub/sub invalidation.

Whoever changes a key (admin API on any replica, or the CLI) publishes ``{"key_hash", "key_id"}``
on one channel; each replica's listener drops that entry from its key cache (and any outage-mode
budget counter), so the next request reloads the key from the database. Messages published while
a replica is disconnected are lost, so after every reconnect the listener clears its whole key
cache; without Redis the cache TTL (``limits.key_cache_ttl_s``) still bounds staleness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import orjson
import redis.asyncio as redis

from sluice.redis_backend.client import OUTAGE_ERRORS

__all__ = ["CHANNEL", "KeyChange", "InvalidationListener", "publish_key_change"]

log = logging.getLogger("sluice.redis")

CHANNEL = "sluice:keys:changed"


@dataclass(frozen=True, slots=True)
class KeyChange:
    key_hash: str | None  # None: drop everything
    key_id: str | None


async def publish_key_change(client: redis.Redis, key_hash: str, key_id: str) -> int:
    """Publish one change; returns how many replicas received it."""
    payload = orjson.dumps({"key_hash": key_hash, "key_id": key_id})
    return int(await client.publish(CHANNEL, payload))


def _decode(data: object) -> KeyChange | None:
    try:
        body = orjson.loads(data) if isinstance(data, bytes | str) else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        log.warning("ignoring malformed key invalidation message")
        return None
    key_hash, key_id = body.get("key_hash"), body.get("key_id")
    return KeyChange(
        key_hash if isinstance(key_hash, str) else None,
        key_id if isinstance(key_id, str) else None,
    )


OnChange = Callable[[KeyChange], Awaitable[None]]
OnMessage = Callable[[bytes], Awaitable[None]]


class InvalidationListener:
    """Subscribes to key changes, plus any ``extra`` channels (one connection for all)."""

    def __init__(
        self,
        url: str,
        on_change: OnChange,
        *,
        extra: Mapping[str, OnMessage] | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self._url = url
        self._on_change = on_change
        self._extra = {name.encode(): handler for name, handler in (extra or {}).items()}
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def start(self, wait_s: float = 2.0) -> None:
        """Start listening; wait briefly for the first subscription (Redis down is not fatal)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="key-invalidation")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), wait_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        connected_before = False
        while True:
            client = redis.Redis.from_url(self._url, socket_connect_timeout=1.0)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(CHANNEL, *self._extra)
                if connected_before:
                    # Changes published while we were away were lost: forget every cached key.
                    await self._on_change(KeyChange(None, None))
                connected_before = True
                self.subscribed.set()
                await self._listen(pubsub)
            except OUTAGE_ERRORS:
                self.subscribed.clear()
                await asyncio.sleep(self._retry_s)
            finally:
                with contextlib.suppress(*OUTAGE_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
                    await client.aclose()

    async def _listen(self, pubsub: redis.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            handler = self._extra.get(message.get("channel") or b"")
            if handler is not None:
                data = message.get("data")
                if isinstance(data, bytes):
                    await handler(data)
                continue
            change = _decode(message.get("data"))
            if change is not None:
                await self._on_change(change)
