"""The key change log: written with every key change, polled by every server.

Versions follow commit order, which is what lets a poller remember one number: a writer takes
the next version while holding the database's write lock (SQLite: every transaction starts with
``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), so no change can commit
with a version below one a poller has already seen. Only the newest ``KEEP`` rows are kept; a
poller that finds a gap (it fell further behind than that) drops every cached key instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, text

from sluice.storage.aio import AsyncConnection, AsyncEngine
from sluice.storage.schema import key_changes

__all__ = ["KEEP", "KeyChangeRow", "latest_version", "changes_after", "record_change"]

KEEP = 1000
_LOCK_ID = 0x51_1C_E0_05  # pg_advisory_xact_lock: writers of key changes, one at a time


@dataclass(frozen=True, slots=True)
class KeyChangeRow:
    version: int
    key_id: str
    key_hash: str
    spend_reset: bool  # spend reset or key deleted: cached budget counters go too


async def record_change(
    conn: AsyncConnection, key_id: str, key_hash: str, *, spend_reset: bool = False
) -> int:
    """Append a change inside the caller's transaction (the one that changed the key)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    newest = (await conn.execute(select(func.max(key_changes.c.version)))).scalar_one()
    version = int(newest or 0) + 1
    await conn.execute(
        insert(key_changes).values(
            version=version,
            key_id=key_id,
            key_hash=key_hash,
            spend_reset=spend_reset,
            changed_at=time.time(),
        )
    )
    if version > KEEP:
        await conn.execute(delete(key_changes).where(key_changes.c.version <= version - KEEP))
    return version


async def latest_version(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        newest = (await conn.execute(select(func.max(key_changes.c.version)))).scalar_one()
    return int(newest or 0)


async def changes_after(engine: AsyncEngine, version: int) -> list[KeyChangeRow]:
    """Changes newer than ``version``, oldest first: one primary-key range read, empty (and
    so nearly free) when nothing changed."""
    columns = (
        key_changes.c.version,
        key_changes.c.key_id,
        key_changes.c.key_hash,
        key_changes.c.spend_reset,
    )
    query = select(*columns).where(key_changes.c.version > version).order_by(key_changes.c.version)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.limit(KEEP))).all()
    return [KeyChangeRow(int(r.version), r.key_id, r.key_hash, bool(r.spend_reset)) for r in rows]
