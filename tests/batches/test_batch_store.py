"""The batch tables on SQLite and PostgreSQL: migration 0009 both ways, the lease (one worker
of several wins it; a lost lease cannot be renewed), and a line starts only once."""

from __future__ import annotations

import asyncio
import time

from alembic import command
from sqlalchemy import inspect

from sluice.batches.store import BatchRecord, BatchStore, new_batch_id
from sluice.storage.aio import AsyncEngine
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import _alembic_config, current_revision, upgrade_database

_TABLES = {"files", "batches", "batch_lines"}


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), revision))


async def test_migration_0009_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine, "0005")
        kept = await KeyStore(engine).create("kept")
        assert not _TABLES & await _tables(engine)
        await upgrade_database(engine, "0009")
        assert await current_revision(engine) == "0009"
        assert _TABLES <= await _tables(engine)
        await _downgrade(engine, "0005")
        assert not _TABLES & await _tables(engine)
        assert await KeyStore(engine).get(kept.record.id) is not None
        await upgrade_database(engine, "0009")
        assert _TABLES <= await _tables(engine)
    finally:
        await engine.dispose()


def _batch(key_id: str = "k") -> BatchRecord:
    now = time.time()
    return BatchRecord(
        id=new_batch_id(), key_id=key_id, endpoint="/v1/chat/completions",
        input_file_id="file-x", completion_window="24h", status="validating",
        price_ppm=500_000, created_at=now, expires_at=now + 86_400, total=3,
    )  # fmt: skip


async def test_one_of_many_workers_takes_a_lease_and_only_its_owner_renews_it(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        store = BatchStore(engine)
        batch = _batch()
        await store.add(batch)
        now = time.time()
        assert await store.runnable(now, 10) == [batch.id]
        won = await asyncio.gather(*(store.acquire(batch.id, f"w{i}", now, 30) for i in range(8)))
        assert won.count(True) == 1
        owner = f"w{won.index(True)}"
        assert await store.runnable(now, 10) == []  # held
        assert await store.renew(batch.id, "someone-else", now + 60) is None
        assert await store.renew(batch.id, owner, now + 60) == "validating"
        # Run out: another worker takes it, and the old owner can no longer renew or write.
        later = now + 61
        assert await store.runnable(later, 10) == [batch.id]
        assert await store.acquire(batch.id, "w-new", later, 30)
        assert await store.renew(batch.id, owner, later + 30) is None
        assert not await store.set_status(batch.id, owner, "in_progress", when=None, now=later)
        assert await store.set_status(
            batch.id, "w-new", "in_progress", when="in_progress_at", now=later
        )
        fetched = await store.get(batch.id, "k")
        assert fetched is not None and fetched.status == "in_progress"
        assert fetched.times["in_progress_at"] == later
        assert await store.get(batch.id, "another-key") is None
    finally:
        await engine.dispose()


async def test_a_line_starts_once_and_only_its_starter_ends_it(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        store = BatchStore(engine)
        batch = _batch()
        await store.add(batch)
        now = time.time()
        claims = await asyncio.gather(
            *(store.claim(batch.id, 0, "c-0", f"w{i}", now) for i in range(6))
        )
        assert claims.count(True) == 1
        winner = f"w{claims.index(True)}"
        assert not await store.finish(batch.id, 0, "w-other", "succeeded", b"{}", now)
        assert await store.finish(batch.id, 0, winner, "succeeded", b'{"a":1}', now)
        assert not await store.finish(batch.id, 0, winner, "failed", b"{}", now)  # ended once
        assert await store.claim(batch.id, 1, "c-1", winner, now)
        assert await store.finish(batch.id, 1, winner, "failed", b'{"b":2}', now)
        assert await store.claim(batch.id, 2, "c-2", winner, now)  # still running
        lines = await store.lines(batch.id)
        assert {n: (x.custom_id, x.state) for n, x in lines.items()} == {
            0: ("c-0", "succeeded"), 1: ("c-1", "failed"), 2: ("c-2", "running"),
        }  # fmt: skip
        results = [(x.line_no, x.result) async for x in store.results(batch.id, page=1)]
        assert results == [(0, b'{"a":1}'), (1, b'{"b":2}')]
        live = await store.get(batch.id)
        assert live is not None and (live.completed, live.failed) == (1, 1)
    finally:
        await engine.dispose()
