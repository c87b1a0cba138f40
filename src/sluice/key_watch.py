"""Every server learns of key changes made elsewhere by polling the key change log.

The admin API drops a changed key from its own worker's cache at once, and with Redis every
replica hears of it on pub/sub (``redis_backend/invalidation.py``). Neither reaches a server
when the change comes from the CLI without Redis, or when the message is lost while Redis is
unreachable: so each worker reads the change log (``storage/key_changes.py``) every
``limits.key_change_poll_s`` (one primary-key range read, empty when nothing changed), in the
background, never on the request path, and drops just the keys that changed. With Redis it is
the backstop for a message lost while Redis was unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

from sluice.storage.aio import AsyncEngine
from sluice.storage.key_changes import KeyChangeRow, changes_after, latest_version

__all__ = ["KeyChangeWatcher", "OnKeyChange"]

log = logging.getLogger("sluice")

# None: changes may have been missed (the log moved on past them), so every cached key goes.
OnKeyChange = Callable[[KeyChangeRow | None], Awaitable[None]]
_READ_TIMEOUT_S = 5.0
_DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


class KeyChangeWatcher:
    def __init__(self, engine: AsyncEngine, on_change: OnKeyChange, interval_s: float) -> None:
        self._engine = engine
        self._on_change = on_change
        self._interval_s = interval_s
        self._seen: int | None = None  # newest version applied; None: not read yet
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Read where the log stands before serving (a change after this is never missed);
        then poll in the background. A database error here is not fatal: polling retries."""
        if self._interval_s <= 0 or self._task is not None:
            return
        with contextlib.suppress(*_DB_ERRORS):
            async with asyncio.timeout(_READ_TIMEOUT_S):
                self._seen = await latest_version(self._engine)
        self._task = asyncio.create_task(self._run(), name="key-change-watch")

    async def close(self) -> None:
        """Stop between polls. Never cancelled mid-read: a read cancelled inside the pool can
        leave its connection checked out while the engine is disposed, and the driver's
        connection is then dropped unclosed. A poll in flight ends within its own timeout."""
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None

    async def poll(self) -> int:
        """Apply the changes committed since the last poll; returns how many there were."""
        async with asyncio.timeout(_READ_TIMEOUT_S):
            if self._seen is None:  # never read: whatever is cached may predate a change
                self._seen = await latest_version(self._engine)
                await self._on_change(None)
                return 0
            rows = await changes_after(self._engine, self._seen)
        if rows and rows[0].version != self._seen + 1:
            log.warning("key change log moved past this worker: dropping every cached key")
            await self._on_change(None)
        else:
            for row in rows:
                await self._on_change(row)
        if rows:
            self._seen = rows[-1].version
        return len(rows)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await self.poll()
            except _DB_ERRORS as exc:
                if not self._failing:  # once per outage, not twice a second
                    log.warning("key change poll failed: %s", type(exc).__name__)
                self._failing = True
            else:
                if self._failing:
                    log.info("key change poll works again")
                self._failing = False
