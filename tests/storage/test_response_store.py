"""Stored responses (migration 0007) on SQLite and PostgreSQL: visible only to the key that
made them, until they expire; expired rows are deleted by the next save or by prune; the
migration adds and removes the table without touching the others."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import func, inspect, select

from sluice.storage.aio import AsyncEngine
from sluice.storage.db import create_engine
from sluice.storage.migrate import _alembic_config, current_revision, upgrade_database
from sluice.storage.response_store import ResponseStore
from sluice.storage.schema import stored_responses

DAY = 86_400.0
T0 = 1_800_000_000.0


def response(rid: str) -> dict[str, Any]:
    return {"id": rid, "object": "response", "output": [{"type": "message", "id": "msg_1"}]}


ITEMS = [{"type": "message", "id": "msg_0", "role": "user", "content": []}]


async def _rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(stored_responses))).scalar()
    return int(count or 0)


async def test_save_get_delete_scoped_to_the_key(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        store = ResponseStore(engine, retention_days=30)
        saved = await store.save(response("resp_a"), ITEMS, "key-1", now=T0)
        assert saved.expires_at == T0 + 30 * DAY
        found = await store.get("resp_a", "key-1", now=T0 + 1)
        assert found is not None
        assert found.response == response("resp_a") and found.input_items == ITEMS
        assert found.created_at == T0 and found.key_id == "key-1"
        assert found.upstream_held is False
        await store.save(response("resp_up"), ITEMS, "key-1", now=T0, upstream_held=True)
        held = await store.get("resp_up", "key-1", now=T0 + 1)
        assert held is not None and held.upstream_held is True
        assert await store.get("resp_a", "key-2", now=T0 + 1) is None  # another key
        assert await store.get("resp_b", "key-1", now=T0 + 1) is None
        assert not await store.delete("resp_a", "key-2", now=T0 + 1)  # another key: kept
        assert await store.delete("resp_a", "key-1", now=T0 + 1)
        assert not await store.delete("resp_a", "key-1", now=T0 + 1)  # already gone
        assert await store.get("resp_a", "key-1", now=T0 + 1) is None
    finally:
        await engine.dispose()


async def test_expiry_hides_then_deletes(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        store = ResponseStore(engine, retention_days=1)
        await store.save(response("resp_old"), ITEMS, "k", now=T0)
        await store.save(response("resp_mid"), ITEMS, "k", now=T0 + DAY / 2)
        later = T0 + DAY + 1
        assert await store.get("resp_old", "k", now=later) is None  # expired: hidden at once
        assert not await store.delete("resp_old", "k", now=later)
        assert await store.get("resp_mid", "k", now=later) is not None
        assert await _rows(engine) == 2
        await store.save(response("resp_new"), ITEMS, "k", now=later)  # deletes the expired
        assert await _rows(engine) == 2
        assert await store.prune(now=T0 + 10 * DAY) == 2
        assert await _rows(engine) == 0
    finally:
        await engine.dispose()


async def test_migration_0007_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)

    async def tables() -> set[str]:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))

    try:
        await upgrade_database(engine, "0007")
        assert await current_revision(engine) == "0007"
        assert "responses" in await tables()
        await ResponseStore(engine, 1).save(response("resp_x"), ITEMS, "k", now=T0)
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), "0005"))
        assert await current_revision(engine) == "0005"
        remaining = await tables()
        assert "responses" not in remaining and {"api_keys", "usage"} <= remaining
        await upgrade_database(engine, "0007")
        assert await _rows(engine) == 0
    finally:
        await engine.dispose()
