"""Usage batches written through the database driver itself, not SQLAlchemy.

A flush through SQLAlchemy Core pays a fixed CPU cost however few rows it carries — a checkout
(pre-pinged on PostgreSQL), statement construction and compile-cache lookups, a greenlet hop
per call — and it runs on the event loop, so requests wait behind it (most of the tail latency
at low concurrency; figures: docs/architecture.md). Here a flush is one multi-row INSERT plus
the per-key ``spent`` UPDATEs, sorted so replicas cannot deadlock, in one transaction on a
connection from the same pool, at about half that cost. Column lists come from ``schema.py``,
so the statements follow the table.

A batch whose rows count no unit besides tokens (every chat batch) is written without the unit
columns (``schema.UNIT_COLUMNS``; their server default is 0): the statement and arrays of a
token-only table, so chat flushes pay nothing for the unit columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from sluice.storage.aio import AsyncEngine
from sluice.storage.schema import UNIT_COLUMNS, usage

__all__ = ["UsageWriter", "driver_writer"]


class UsageWriteFailed(SQLAlchemyError):
    """A driver error, reported like SQLAlchemy's own so the sink keeps its rows and retries."""


class UsageWriter(Protocol):
    async def write(
        self, rows: Sequence[Any], spent: dict[str, int], last_used: dict[str, float]
    ) -> None: ...


def _without_units(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in columns if name not in UNIT_COLUMNS)


def _metered(rows: Sequence[Any]) -> bool:
    return any(row.metered for row in rows)


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
        self._base_columns = _without_units(self._columns)
        self._insert = self._statement(self._columns)
        self._base_insert = self._statement(self._base_columns)

    def _statement(self, columns: tuple[str, ...]) -> str:
        types = [usage.c[name].type.compile(dialect=self._engine.dialect) for name in columns]
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
        return f"INSERT INTO usage ({', '.join(columns)}) SELECT * FROM unnest({arrays})"

    async def write(
        self, rows: Sequence[Any], spent: dict[str, int], last_used: dict[str, float]
    ) -> None:
        metered = _metered(rows)
        columns, insert = (
            (self._columns, self._insert) if metered else (self._base_columns, self._base_insert)
        )
        arrays = [[getattr(row, name) for row in rows] for name in columns]
        from asyncpg import InterfaceError, PostgresError  # loaded only where PostgreSQL is

        async with self._engine.connect() as conn:
            raw = conn.driver_connection
            try:
                async with raw.transaction():
                    await raw.execute(insert, *arrays)
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
        self._base_columns = _without_units(self._columns)
        self._insert = self._statement(self._columns)
        self._base_insert = self._statement(self._base_columns)

    @staticmethod
    def _statement(columns: tuple[str, ...]) -> str:
        marks = ", ".join("?" for _ in columns)
        return f"INSERT INTO usage ({', '.join(columns)}) VALUES ({marks})"

    async def write(
        self, rows: Sequence[Any], spent: dict[str, int], last_used: dict[str, float]
    ) -> None:
        metered = _metered(rows)
        columns, insert = (
            (self._columns, self._insert) if metered else (self._base_columns, self._base_insert)
        )
        values = [tuple(getattr(row, name) for name in columns) for row in rows]
        from sqlite3 import Error  # loaded only where SQLite is

        async with self._engine.connect() as conn:
            raw = conn.driver_connection  # in autocommit mode (db.py): transactions are ours
            try:
                await raw.execute("BEGIN IMMEDIATE")
                try:
                    await raw.executemany(insert, values)
                    for key_id in sorted(spent):
                        await raw.execute(self._SPEND, (spent[key_id], last_used[key_id], key_id))
                except BaseException:
                    await raw.execute("ROLLBACK")
                    raise
                await raw.execute("COMMIT")
            except Error as exc:
                raise UsageWriteFailed(f"{type(exc).__name__}: {exc}") from exc
