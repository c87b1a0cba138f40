"""Usage rows with metered units (images, audio seconds, ...) through the sink's writers."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import select

from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import upgrade_database
from sluice.storage.schema import UNIT_COLUMNS, api_keys, usage
from sluice.storage.usage_sink import UsageRow, UsageSink
from sluice.storage.usage_writers import driver_writer

T0 = 1_772_323_200.0  # 2026-03-01


def _row(key_id: str, request_id: str, cost: int, **units: int) -> UsageRow:
    row = UsageRow(
        request_id=request_id, key_id=key_id, endpoint="images", model="dall-e-3",
        upstream_model="dall-e-3", channel="c", prompt_tokens=0, cached_tokens=0,
        completion_tokens=0, cost_micro=cost, status=200, error_code=None, latency_ms=1.0,
        ttft_ms=None, stream=False, created_at=T0,
    )  # fmt: skip
    for unit, count in units.items():  # UsageRow's unit counts (UNIT_COLUMNS)
        setattr(row, unit, count)
    return row


async def _stored(engine: Any) -> list[UsageRow]:
    columns = [usage.c[f.name] for f in fields(UsageRow)]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(*columns).order_by(usage.c.request_id))).all()
    return [UsageRow(*r) for r in rows]


def test_unit_columns_are_row_fields_and_table_columns() -> None:
    names = [f.name for f in fields(UsageRow)]
    assert names[-len(UNIT_COLUMNS) :] == list(UNIT_COLUMNS)
    assert all(name in usage.c for name in names)


async def test_rows_with_units_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        key_id = (await KeyStore(engine).create("k")).record.id
        big = 2**31 - 1  # the largest count an Integer column holds on PostgreSQL
        metered = [
            _row(key_id, "r1", 80_000, images=1),
            _row(key_id, "r2", 6_100, audio_seconds=61),
            _row(key_id, "r3", 61_440, characters=4096),
            _row(key_id, "r4", 14_000, search_units=7),
            _row(key_id, "r5", 500_000, calls=1),
            _row(key_id, "r6", 1, images=2, audio_seconds=3, characters=big, search_units=5,
                 calls=6),
            _row(key_id, "r7", 23),  # a chat-like row in the same batch
        ]  # fmt: skip
        sink = UsageSink(engine)
        for row in metered:
            sink.record(row)
        assert await sink.flush() == len(metered)
        assert await _stored(engine) == metered
        async with engine.connect() as conn:
            spent = (await conn.execute(select(api_keys.c.spent_micro))).scalar_one()
        assert spent == sum(r.cost_micro for r in metered)
    finally:
        await engine.dispose()


async def test_a_batch_without_units_leaves_them_to_the_default(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        key_id = (await KeyStore(engine).create("k")).record.id
        writer: Any = driver_writer(engine, [f.name for f in fields(UsageRow)])
        # The chat statement does not name the unit columns at all (same as before 0004).
        assert not any(unit in writer._base_insert for unit in UNIT_COLUMNS)
        assert all(unit in writer._insert for unit in UNIT_COLUMNS)
        plain = [_row(key_id, f"p{i}", 10) for i in range(3)]
        await writer.write(plain, {key_id: 30}, {key_id: T0})
        await writer.write([_row(key_id, "q", 5, calls=1)], {key_id: 5}, {key_id: T0})
        stored = await _stored(engine)
        assert stored == [*plain, _row(key_id, "q", 5, calls=1)]
        assert [r.metered for r in stored] == [False, False, False, True]
    finally:
        await engine.dispose()
