"""Client callbacks (``notifyHook``): the task on every status change, signed, SSRF-guarded.

The URL is the tenant's, so it is fetched like a tenant's image (``providers/media_guard``):
only globally routable addresses, checked where the socket connects (every redirect refused:
a callback is one POST). Each delivery has a timeout and is retried with exponential backoff;
the receiver's answer is not read beyond its status.

Signature: ``X-Sluice-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body bytes with
the key's callback secret, which is HMAC-SHA256(server secret, ``"task-callback:" + key id``)
— the key holder reads it from ``GET /tasks/callback-secret`` (docs/tasks.md shows how to verify).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from yarl import URL

from sluice.providers.media_guard import (
    AddressPolicy,
    BlockedAddress,
    GuardedResolver,
    any_address,
    check_url,
    guarded_socket_factory,
    public_address,
)
from sluice.tasks.config import TasksConfig
from sluice.tasks.model import TaskRow

if TYPE_CHECKING:
    from sluice.tasks.store import TaskStore

__all__ = ["Notifier", "callback_secret", "check_callback_url", "signature"]

log = logging.getLogger("sluice.tasks.callbacks")

SIGNATURE_HEADER = "X-Sluice-Signature"


def callback_secret(server_secret: bytes, key_id: str) -> str:
    """The key's callback signing secret (hex): the same on every replica, never stored."""
    return hmac.new(server_secret, b"task-callback:" + key_id.encode(), hashlib.sha256).hexdigest()


def signature(secret_hex: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret_hex.encode(), body, hashlib.sha256).hexdigest()


def _policy(config: TasksConfig) -> AddressPolicy:
    return any_address if config.allow_private_callback_urls else public_address


def check_callback_url(url: str, config: TasksConfig) -> str | None:
    """Why the callback URL is refused, or None when it may be used (checked at submit, so a
    client learns at once; the connection is guarded again at delivery)."""
    try:
        parsed = URL(url)
        check_url(parsed, _policy(config))
    except (BlockedAddress, ValueError):
        return (
            "The callback URL must be an http(s) URL of a public address "
            "(private, loopback and link-local addresses are refused)."
        )
    return None


class Notifier:
    def __init__(self, config: TasksConfig, server_secret: bytes) -> None:
        self._config = config
        self._server_secret = server_secret
        # One delivery at a time per task, so a receiver hears a task's changes in order:
        # task id -> (its lock, deliveries waiting for or holding it).
        self._order: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def _session(self) -> aiohttp.ClientSession:
        policy = _policy(self._config)
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(policy),
            socket_factory=guarded_socket_factory(policy),
            use_dns_cache=False,
            limit=4,
            force_close=True,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._config.callback_timeout_s),
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def deliver(self, row: TaskRow, task: dict[str, Any], store: TaskStore) -> bool:
        """POST the task to its callback URL until a 2xx, at most ``1 + callback_retries``
        times; True if delivered. A task's deliveries go out in the order they were made."""
        lock, users = self._order.setdefault(row.id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._deliver(row, task, store)
        finally:
            users[0] -= 1
            if not users[0]:  # the last one out tidies
                self._order.pop(row.id, None)

    async def _deliver(self, row: TaskRow, task: dict[str, Any], store: TaskStore) -> bool:
        url = row.callback_url
        if not url:
            return False
        body = orjson.dumps(task)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(callback_secret(self._server_secret, row.key_id), body),
            "X-Sluice-Task-Id": row.id,
        }
        delay = self._config.callback_backoff_s
        async with self._session() as session:
            for attempt in range(self._config.callback_retries + 1):
                if attempt:
                    await asyncio.sleep(delay)
                    delay *= 2
                try:
                    parsed = URL(url)
                    check_url(parsed, _policy(self._config))
                    async with session.post(
                        parsed, data=body, headers=headers, allow_redirects=False
                    ) as response:
                        if 200 <= response.status < 300:
                            await store.mark_notified(row.id, row.state)
                            return True
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    log.info("task %s: callback attempt failed: %s", row.id, type(exc).__name__)
        log.warning("task %s: callback not delivered after %d attempts", row.id, attempt + 1)
        return False
