"""Channel health shared between replicas: circuit transitions broadcast over Redis pub/sub.

``MemoryChannelHealth`` (sluice.health) stays the per-replica breaker the router consults
synchronously; this module mirrors its transitions. A replica that disables a channel (dead
upstream key, no credit) or re-enables it tells the others, which apply the same change at once
instead of each burning requests to find out. Open/half-open transitions are applied when the
health object offers ``force_state(channel, model, state)``; without it each replica's breakers
open on their own failures (a handful of requests per replica).

Messages carry the sender's id so a replica ignores its own, and changes applied from a message
are not re-published (no echo storms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Protocol

import orjson

from sluice.redis_backend.client import RedisBackend, RedisUnavailable

__all__ = ["CIRCUIT_CHANNEL", "CircuitSync"]

log = logging.getLogger("sluice.redis")

CIRCUIT_CHANNEL = "sluice:circuit:changed"


class SharedHealth(Protocol):
    def disable(self, channel: str, reason: str) -> None: ...

    def enable(self, channel: str) -> bool: ...

    def disabled_channels(self) -> list[str]: ...


class CircuitSync:
    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self.origin = uuid.uuid4().hex
        self._health: SharedHealth | None = None
        self._applying = False
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, health: SharedHealth) -> None:
        self._health = health

    def local_change(self, channel: str, model: str | None, state: str) -> None:
        """The health object's change hook (synchronous): publish in the background."""
        if self._applying or self._health is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        payload = orjson.dumps(
            {"origin": self.origin, "channel": channel, "model": model, "state": state}
        )
        task = loop.create_task(self._publish(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, payload: bytes) -> None:
        with contextlib.suppress(RedisUnavailable):
            await self._backend.call(lambda: self._backend.client.publish(CIRCUIT_CHANNEL, payload))

    async def on_message(self, data: bytes) -> None:
        try:
            body: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict) or body.get("origin") == self.origin:
            return
        channel, model, state = body.get("channel"), body.get("model"), body.get("state")
        if self._health is None or not isinstance(channel, str) or not isinstance(state, str):
            return
        self._applying = True
        try:
            self._apply(self._health, channel, model if isinstance(model, str) else None, state)
        finally:
            self._applying = False

    @staticmethod
    def _apply(health: SharedHealth, channel: str, model: str | None, state: str) -> None:
        if state == "disabled":
            health.disable(channel, "disabled by another replica")
            log.info("channel %s disabled by another replica", channel)
        elif state == "closed" and model is None and channel in health.disabled_channels():
            health.enable(channel)
            log.info("channel %s re-enabled by another replica", channel)
        else:
            force = getattr(health, "force_state", None)
            if callable(force):
                force(channel, model, state)
