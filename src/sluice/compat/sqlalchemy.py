"""SQLAlchemy: the greenlet bridge between its sync Core API and an asyncio driver.

Touches ``sqlalchemy.util.concurrency.greenlet_spawn``, which is not documented public API
(``sqlalchemy.util`` is internal) but is what ``sqlalchemy.ext.asyncio`` itself runs every call
through. Why: ``storage/aio.py`` replaces ext.asyncio, whose import pulls in the whole ORM
(megabytes per worker), with the same bridge for the five calls Sluice makes. Choosing the async
dialect needs no private flag: the URL names an async driver (``aiosqlite``, ``asyncpg``) and
``require_async_dialect`` refuses any other.
"""

from __future__ import annotations

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import ArgumentError
from sqlalchemy.util.concurrency import greenlet_spawn

__all__ = ["greenlet_spawn", "require_async_dialect"]


def require_async_dialect(dialect: Dialect) -> None:
    """A sync driver would block the event loop on every query: refuse it up front."""
    if not dialect.is_async:
        raise ArgumentError(
            f"database driver '{dialect.driver}' is not an asyncio driver; use a sqlite:/// or "
            "postgresql:// URL (aiosqlite / asyncpg)"
        )
