"""The task table on SQLite and PostgreSQL: migration 0008 both ways, leases won by one claimer,
the end settled once with the refund, and the spend never below zero."""

from __future__ import annotations

import asyncio
import time

import pytest
from alembic import command
from sqlalchemy import inspect

from sluice.storage.aio import AsyncEngine
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyChanges, KeyStore
from sluice.storage.migrate import _alembic_config, upgrade_database
from sluice.tasks.model import Snapshot, TaskRow, new_task_id
from sluice.tasks.store import Ending, TaskStore
from tests.tasks.conftest import pg_url  # noqa: F401 - the fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tasks.db"
    url: str = request.getfixturevalue("pg_url")
    return url


def _task(key_id: str, reserved: int = 50_000) -> TaskRow:
    now = time.time()
    return TaskRow(
        id=new_task_id("midjourney"), key_id=key_id, kind="midjourney", action="IMAGINE",
        mode="fast", model="mj-fast-imagine", channel="mj", upstream_id="up-1",
        state="submitted", progress=0, request={"prompt": "p"}, result={}, fail_reason=None,
        reserved_micro=reserved, cost_micro=None, units=1, created_at=now, updated_at=now,
    )  # fmt: skip


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_migration_0008_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine, "0008")
        assert "tasks" in await _tables(engine)
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), "0005"))
        assert "tasks" not in await _tables(engine)
        assert "api_keys" in await _tables(engine)
        await upgrade_database(engine)
        assert "tasks" in await _tables(engine)
    finally:
        await engine.dispose()


async def test_one_claimer_wins_each_task_and_ends_it_once(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        keys = KeyStore(engine)
        key = (await keys.create("k")).record
        store = TaskStore(engine)
        rows = [_task(key.id) for _ in range(6)]
        for row in rows:
            await store.insert_charged(row, next_poll_at=0)
        assert (await keys.get(key.id)).spent_micro == 6 * 50_000  # type: ignore[union-attr]
        claims = await asyncio.gather(*(store.claim_due(f"replica-{n}", 30, 10) for n in range(3)))
        claimed = [r.id for batch in claims for r in batch]
        assert sorted(claimed) == sorted(r.id for r in rows)  # every task, once
        assert await store.claim_due("late", 30, 10) == []  # all leased
        later = await store.claim_due("late", 30, 10, now=time.time() + 31)
        assert len(later) == 6  # expired leases are taken over
        failed = Snapshot("failure", 10, {}, "boom")
        ending = Ending("failure", 0, 502, "task_failed", failed)
        ends = await asyncio.gather(*(store.finish(rows[0], ending) for _ in range(4)))
        assert sum(e is not None for e in ends) == 1  # settled exactly once
        assert (await keys.get(key.id)).spent_micro == 5 * 50_000  # type: ignore[union-attr]
        await keys.update(key.id, KeyChanges(reset_spent=True))
        await store.finish(rows[1], ending)  # refund after a spend reset: not below zero
        assert (await keys.get(key.id)).spent_micro == 0  # type: ignore[union-attr]
    finally:
        await engine.dispose()
