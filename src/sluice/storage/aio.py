"""A small async facade over SQLAlchemy Core that does not import ``sqlalchemy.ext.asyncio``.

Why not ext.asyncio: its package imports its ORM session module, and with it all of
``sqlalchemy.orm`` (megabytes of RSS in every worker) that Sluice, which uses Core only, never
calls. This does what ext.asyncio's engine does underneath: a sync ``Engine`` on an async
driver (aiosqlite, asyncpg), each blocking call bridged to the event loop by SQLAlchemy's
``greenlet_spawn``. Only the calls the storage layer makes are offered.

Results are fully buffered by both drivers' adapters (no server-side cursors are used), so a
``Result`` is read after ``execute`` returns without further awaiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine, create_engine
from sqlalchemy.engine.url import URL
from sqlalchemy.sql.base import Executable

from sluice.compat.sqlalchemy import greenlet_spawn, require_async_dialect

__all__ = ["AsyncConnection", "AsyncEngine", "create_async_engine"]

_T = TypeVar("_T")


class AsyncConnection:
    """One pooled connection; ``execute`` and ``run_sync`` run in a greenlet."""

    __slots__ = ("_sync",)

    def __init__(self, sync: Connection) -> None:
        self._sync = sync

    @property
    def dialect(self) -> Dialect:
        return self._sync.dialect

    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[*tuple[Any, ...]]:
        result: CursorResult[*tuple[Any, ...]] = await greenlet_spawn(
            self._sync.execute, statement, parameters
        )
        return result

    @property
    def driver_connection(self) -> Any:
        """The driver's own connection (an ``asyncpg.Connection`` on PostgreSQL), for the one
        hot write that skips SQLAlchemy's per-statement cost (``usage_sink``)."""
        return self._sync.connection.driver_connection

    async def run_sync(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn(sync_connection)`` (Alembic's migration runner needs this)."""
        return await greenlet_spawn(fn, self._sync)


class AsyncEngine:
    __slots__ = ("sync_engine",)

    def __init__(self, sync_engine: Engine) -> None:
        self.sync_engine = sync_engine

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    @property
    def url(self) -> URL:
        return self.sync_engine.url

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection outside any explicit transaction (reads; autobegin, rolled back)."""
        sync = await greenlet_spawn(self.sync_engine.connect)
        try:
            yield AsyncConnection(sync)
        finally:
            # Shielded: a cancelled caller must still hand the connection back to the pool.
            await asyncio.shield(greenlet_spawn(sync.close))

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction: committed on success, rolled back on any error."""
        async with self.connect() as conn:
            transaction = await greenlet_spawn(conn._sync.begin)
            try:
                yield conn
            except BaseException:
                await asyncio.shield(greenlet_spawn(transaction.rollback))
                raise
            await asyncio.shield(greenlet_spawn(transaction.commit))

    async def dispose(self) -> None:
        await greenlet_spawn(self.sync_engine.dispose)


def create_async_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    # The URL names an async driver (aiosqlite, asyncpg): its dialect brings the asyncio-safe
    # pool, with no private create_engine flag (tests/test_compat.py).
    engine = create_engine(url, **kwargs)
    require_async_dialect(engine.dialect)
    return AsyncEngine(engine)
