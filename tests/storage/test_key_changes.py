"""The key change log: every update and delete is numbered in commit order; migration 0005
adds and removes the table on SQLite and PostgreSQL without touching the keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, inspect, select

from sluice.storage import key_changes as log
from sluice.storage.aio import AsyncEngine
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyChanges, KeyStore
from sluice.storage.migrate import _alembic_config, current_revision, upgrade_database
from sluice.storage.schema import api_keys, key_changes


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), revision))


async def _round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine, "0003")
        store = KeyStore(engine)
        kept = await store.create("kept", rpm=5)  # made before 0005: no log row needed
        assert "key_changes" not in await _tables(engine)
        await upgrade_database(engine, "0005")
        assert await current_revision(engine) == "0005"
        assert await log.latest_version(engine) == 0
        await store.update(kept.record.id, KeyChanges(disabled=True))
        assert [c.key_hash for c in await log.changes_after(engine, 0)] == [kept.record.key_hash]

        await _downgrade(engine, "0003")
        assert await current_revision(engine) == "0003"
        assert "key_changes" not in await _tables(engine)
        record = await store.get(kept.record.id)  # the keys are untouched
        assert record is not None and record.disabled and record.rpm == 5

        await upgrade_database(engine, "0005")
        assert await log.latest_version(engine) == 0  # a fresh, empty log
    finally:
        await engine.dispose()


async def test_migration_0005_round_trip_on_sqlite(tmp_path: Path) -> None:
    await _round_trip(f"sqlite:///{tmp_path / 'm.db'}")


async def test_migration_0005_round_trip_on_postgresql(pg_url: str) -> None:
    await _round_trip(pg_url)


async def _logged_store(database_url: str) -> tuple[AsyncEngine, KeyStore]:
    engine = create_engine(database_url)
    await upgrade_database(engine)
    return engine, KeyStore(engine)


async def test_updates_and_deletes_are_logged_in_order(tmp_path: Path) -> None:
    engine, store = await _logged_store(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        a = (await store.create("a")).record
        b = (await store.create("b")).record
        assert await log.latest_version(engine) == 0  # a new key is in no cache: not logged
        await store.update(a.id, KeyChanges(rpm=3))
        await store.update(b.id, KeyChanges(reset_spent=True))
        await store.update(a.id, KeyChanges())  # nothing to change: nothing logged
        assert await store.delete(b.id)
        assert not await store.delete(b.id)  # already gone: nothing logged
        rows = await log.changes_after(engine, 0)
        assert [(r.version, r.key_id, r.spend_reset) for r in rows] == [
            (1, a.id, False),
            (2, b.id, True),
            (3, b.id, True),
        ]
        assert [r.version for r in await log.changes_after(engine, 2)] == [3]
    finally:
        await engine.dispose()


async def test_concurrent_writers_get_distinct_versions_on_postgresql(pg_url: str) -> None:
    engine, store = await _logged_store(pg_url)
    try:
        keys = [(await store.create(f"k{i}")).record for i in range(8)]
        await asyncio.gather(*(store.update(k.id, KeyChanges(rpm=7)) for k in keys))
        rows = await log.changes_after(engine, 0)
        assert [r.version for r in rows] == list(range(1, 9))
        assert {r.key_id for r in rows} == {k.id for k in keys}
    finally:
        await engine.dispose()


async def test_only_the_newest_rows_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, store = await _logged_store(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        monkeypatch.setattr(log, "KEEP", 3)
        key = (await store.create("k")).record
        for rpm in range(1, 6):
            await store.update(key.id, KeyChanges(rpm=rpm))
        async with engine.connect() as conn:
            versions = (await conn.execute(select(key_changes.c.version))).scalars().all()
            keys = (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
        assert sorted(versions) == [3, 4, 5] and keys == 1
    finally:
        await engine.dispose()
