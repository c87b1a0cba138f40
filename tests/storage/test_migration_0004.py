"""Migration 0004 (usage units): adds the unit columns to usage rows and daily totals, and
removes them again on downgrade, keeping every row, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import inspect, text

from sluice.storage.db import create_engine
from sluice.storage.migrate import _alembic_config, current_revision, upgrade_database

# The unit columns 0004 adds (later migrations add more: 0010 video_seconds).
UNIT_COLUMNS = ("images", "audio_seconds", "characters", "search_units", "calls")
_USAGE = (
    "INSERT INTO usage (request_id, key_id, endpoint, model, prompt_tokens, cached_tokens, "
    "completion_tokens, cost_micro, status, latency_ms, stream, created_at) "
    "VALUES (:id, 'k', 'chat', 'm', 3, 0, 2, 23, 200, 1.0, false, 1.0)"
)
_DAILY = (
    "INSERT INTO usage_daily (day, key_id, model, channel, requests, prompt_tokens, "
    "cached_tokens, completion_tokens, cost_micro) VALUES ('2026-03-01', 'k', 'm', '', 4, 1, 0, "
    "1, 99)"
)


async def _columns(engine: Any, table: str) -> list[str]:
    async with engine.connect() as conn:
        columns = await conn.run_sync(lambda sync: inspect(sync).get_columns(table))
    return [column["name"] for column in columns]


async def _downgrade(engine: Any, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), revision))


async def _units(engine: Any, table: str) -> list[tuple[int, ...]]:
    async with engine.connect() as conn:
        query = f"SELECT {', '.join(UNIT_COLUMNS)} FROM {table} ORDER BY 1"
        return [tuple(r) for r in (await conn.execute(text(query))).all()]


async def test_migration_0004_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine, "0003")
        async with engine.begin() as conn:
            await conn.execute(text(_USAGE), {"id": "before"})
            await conn.execute(text(_DAILY))
        await upgrade_database(engine, "0004")
        assert await current_revision(engine) == "0004"
        for table in ("usage", "usage_daily"):
            assert set(UNIT_COLUMNS) <= set(await _columns(engine, table))
            assert await _units(engine, table) == [(0, 0, 0, 0, 0)]  # what old rows used
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE usage_daily SET images = 5000000000, calls = 2"))
        assert await _units(engine, "usage_daily") == [(5_000_000_000, 0, 0, 0, 2)]  # BigInteger

        await _downgrade(engine, "0003")
        assert await current_revision(engine) == "0003"
        for table in ("usage", "usage_daily"):
            assert not set(UNIT_COLUMNS) & set(await _columns(engine, table))
        async with engine.begin() as conn:  # rows survive, and the old writer's INSERT works
            await conn.execute(text(_USAGE), {"id": "during"})
            count = (await conn.execute(text("SELECT count(*) FROM usage"))).scalar_one()
            daily = (await conn.execute(text("SELECT cost_micro FROM usage_daily"))).scalar_one()
        assert (count, daily) == (2, 99)

        await upgrade_database(engine)
        assert await _units(engine, "usage") == [(0, 0, 0, 0, 0)] * 2
    finally:
        await engine.dispose()
