"""Database engine creation for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite is opened in WAL mode with a busy timeout, and every transaction starts with
``BEGIN IMMEDIATE`` so writers queue on the lock instead of failing with "database is locked"
when a read transaction tries to upgrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url

from sluice.storage.aio import AsyncEngine, create_async_engine

__all__ = ["create_engine", "async_url", "is_sqlite"]

_SQLITE_BUSY_TIMEOUT_MS = 10_000


def async_url(database_url: str) -> str:
    """Map the user-facing URL to its async driver."""
    if database_url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + database_url[len("sqlite:///") :]
    if database_url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + database_url.split("://", 1)[1]
    return database_url


def is_sqlite(database_url: str) -> bool:
    return async_url(database_url).startswith("sqlite")


def _prepare_sqlite_path(url: str) -> None:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_engine(database_url: str, *, pool_size: int = 5) -> AsyncEngine:
    url = async_url(database_url)
    if url.startswith("sqlite"):
        _prepare_sqlite_path(url)
        engine = create_async_engine(url, pool_size=2, max_overflow=8)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
