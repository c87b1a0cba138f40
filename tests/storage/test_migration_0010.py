"""Migration 0010: seconds of generated video on usage rows and daily totals, on SQLite and
PostgreSQL; old rows count zero, the downgrade drops the column and keeps the rows."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import inspect, text

from sluice.storage.db import create_engine
from sluice.storage.migrate import _alembic_config, current_revision, upgrade_database

_USAGE = (
    "INSERT INTO usage (request_id, key_id, endpoint, model, prompt_tokens, cached_tokens, "
    "completion_tokens, cost_micro, status, latency_ms, stream, created_at) "
    "VALUES (:id, 'k', 'video.create', 'sora-2', 0, 0, 0, 800000, 200, 1.0, false, 1.0)"
)


async def _columns(engine: Any, table: str) -> set[str]:
    async with engine.connect() as conn:
        columns = await conn.run_sync(lambda sync: inspect(sync).get_columns(table))
    return {column["name"] for column in columns}


async def test_migration_0010_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine, "0008")
        async with engine.begin() as conn:
            await conn.execute(text(_USAGE), {"id": "before"})
        await upgrade_database(engine, "0010")
        assert await current_revision(engine) == "0010"
        for table in ("usage", "usage_daily"):
            assert "video_seconds" in await _columns(engine, table)
        async with engine.begin() as conn:
            rows = (await conn.execute(text("SELECT video_seconds FROM usage"))).all()
            assert [tuple(r) for r in rows] == [(0,)]
            await conn.execute(text("UPDATE usage SET video_seconds = 8"))
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), "0008"))
        for table in ("usage", "usage_daily"):
            assert "video_seconds" not in await _columns(engine, table)
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM usage"))).scalar_one()
        assert count == 1
    finally:
        await engine.dispose()
