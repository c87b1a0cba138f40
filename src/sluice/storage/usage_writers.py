"""Usage batches written through the database driver itself, not SQLAlchemy.

A flush through SQLAlchemy Core pays a fixed CPU cost however few rows it carries — a checkout
(pre-pinged on PostgreSQL), statement construction and compile-cache lookups, a greenlet hop
per call — and it runs on the event loop, so requests wait behind it (most of the tail latency
at low concurrency; figures: docs/architecture.md). Here a flush is one multi-row INSERT plus
the per-key ``spent`` UPDATEs, sorted so replicas cannot deadlock, in one transaction on a
connection from the same pool, at about half that cost. Column lists come from ``schema.py``,
so the statements follow the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from sluice.storage.aio import AsyncEngine
from sluice.storage.schema import usage

__all__ = ["UsageWriter", "driver_writer"]


class UsageWriteFailed(SQLAlchemyError):
    """A driver error, reported like SQLAlchemy's own so the sink keeps its rows and retries."""


class UsageWriter(Protocol):
    async def write(
        self, rows: Sequence[Any], spent: dict[str, int], last_used: dict[str, float]
    ) -> None: ...


def driver_writer(engine: AsyncEngine, columns: Sequence[str]) -> UsageWriter:
    """The writer for the engine's database (Sluice stores in SQLite or PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        return _PostgresWriter(engine, columns)
    if engine.dialect.name == "sqlite":
        return _SqliteWriter(engine, columns)
    raise ValueError(
        f"usage rows can be written to SQLite or PostgreSQL, not {engine.dialect.name}"
    )


class _PostgresWriter:
    """One ``INSERT … SELECT * FROM unnest(…)`` of the batch's columns as arrays (asyncpg)."""

    _SPEND = "UPDATE api_keys SET spent_micro = spent_micro + $1, last_used_at = $2 WHERE id = $3"

    def __init__(self, engine: AsyncEngine, columns: Sequence[str]) -> None:
        self._engine = engine
        self._columns = tuple(columns)
        types = [usage.c[name].type.compile(dialect=engine.dialect) for name in self._columns]
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
        self._insert = (
            f"INSERT INTO usage ({', '.join(self._columns)}) SELECT * FROM unnest({arrays})"
        )

    async def write(
        self, rows: Sequence[Any], spent: dict[str, int], last_used: dict[str, float]
    ) -> None:
        arrays = [[getattr(row, name) for row in rows] for name in self._columns]
        from asyncpg import InterfaceError, PostgresError  # loaded only where PostgreSQL is

        async with self._engine.connect() as conn:
            raw = conn.driver_connection
            try:
                async with raw.transaction():
                    await raw.execute(self._insert, *arrays)
                    for key_id in sorted(spent):  # fixed order: no deadlock between replicas
                        await raw.execute(self._SPEND, spent[key_id], last_used[key_id], key_id)
            except (PostgresError, InterfaceError) as exc:
                raise UsageWriteFailed(f"{type(exc).__name__}: {exc}") from exc


class _SqliteWriter:
    """``executemany`` of the rows in one ``BEGIN IMMEDIATE`` transaction (aiosqlite)."""

    _SPEND = "UPDATE api_keys SET spent_micro = spent_micro + ?, last_used_at = ? WHERE id = ?"

    def __init__(self, engine: AsyncEngine, columns: Sequence[str]) -> None:
        self._engine = engine
        self._columns = tuple(columns)
        marks = ", ".join("?" for _ in self._columns)
        self._insert = f"INSERT INTO usage ({', '.join(self._columns)}) VALUES ({marks})"

    async def write(
        self, rows: Sequence[Any], spent: dict[str, int], last_used: dict[str, float]
    ) -> None:
        values = [tuple(getattr(row, name) for name in self._columns) for row in rows]
        from sqlite3 import Error  # loaded only where SQLite is

        async with self._engine.connect() as conn:
            raw = conn.driver_connection  # in autocommit mode (db.py): transactions are ours
            try:
                await raw.execute("BEGIN IMMEDIATE")
                try:
                    await raw.executemany(self._insert, values)
                    for key_id in sorted(spent):
                        await raw.execute(self._SPEND, (spent[key_id], last_used[key_id], key_id))
                except BaseException:
                    await raw.execute("ROLLBACK")
                    raise
                await raw.execute("COMMIT")
            except Error as exc:
                raise UsageWriteFailed(f"{type(exc).__name__}: {exc}") from exc
