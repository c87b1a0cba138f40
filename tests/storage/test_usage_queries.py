"""Usage reports count the metered units, from live rows and from pruned daily totals."""

from __future__ import annotations

from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import upgrade_database
from sluice.storage.prune import prune_usage
from sluice.storage.schema import UNIT_COLUMNS
from sluice.storage.usage_queries import UsageFilter, UsageQueries
from sluice.storage.usage_sink import UsageRow, UsageSink

DAY = 86_400.0
T0 = 1_772_323_200.0  # 2026-03-01 00:00 UTC


def _row(key_id: str, model: str, day: int, cost: int, **units: int) -> UsageRow:
    row = UsageRow(
        request_id=f"{model}-{day}-{cost}", key_id=key_id, endpoint="x", model=model,
        upstream_model=model, channel="c", prompt_tokens=1, cached_tokens=0,
        completion_tokens=1, cost_micro=cost, status=200, error_code=None, latency_ms=1.0,
        ttft_ms=None, stream=False, created_at=T0 + day * DAY + 60,
    )  # fmt: skip
    for unit, count in units.items():  # UsageRow's unit counts (UNIT_COLUMNS)
        setattr(row, unit, count)
    return row


async def test_reports_sum_units_across_live_rows_and_pruned_days(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        key_id = (await KeyStore(engine).create("k")).record.id
        sink = UsageSink(engine)
        for row in [
            _row(key_id, "dall-e-3", 0, 80_000, images=1),
            _row(key_id, "dall-e-3", 1, 160_000, images=2),
            _row(key_id, "tts-1", 0, 61_440, characters=4096),
            _row(key_id, "tts-1", 1, 15, characters=1000),
            _row(key_id, "whisper-1", 1, 6_000, audio_seconds=60),
            _row(key_id, "rerank-v3.5", 0, 6_000, search_units=3, calls=1),
            _row(key_id, "gpt-4o", 0, 23),
            _row(key_id, "sora-2", 1, 800_000, video_seconds=8),
        ]:
            sink.record(row)
        await sink.close()
        queries = UsageQueries(engine)
        before = await queries.summary(UsageFilter(), "model")
        result = await prune_usage(engine, T0 + DAY)  # day 0 into usage_daily
        assert result.rows_deleted == 4
        by_model = {r["model"]: r for r in await queries.summary(UsageFilter(), "model")}
        assert by_model == {r["model"]: r for r in before}  # pruning changes no total

        def units(model: str) -> tuple[int, ...]:
            return tuple(by_model[model][u] for u in UNIT_COLUMNS)

        assert units("dall-e-3") == (3, 0, 0, 0, 0, 0)
        assert units("tts-1") == (0, 0, 5096, 0, 0, 0)
        assert units("whisper-1") == (0, 60, 0, 0, 0, 0)
        assert units("rerank-v3.5") == (0, 0, 0, 3, 1, 0)
        assert units("gpt-4o") == (0, 0, 0, 0, 0, 0)
        assert units("sora-2") == (0, 0, 0, 0, 0, 8)
        (total,) = await queries.summary(UsageFilter(), None)
        assert tuple(total[u] for u in UNIT_COLUMNS) == (3, 60, 5096, 3, 1, 8)
        assert total["requests"] == 8 and total["cost_micro"] == 1_113_478
        by_day = await queries.summary(UsageFilter(), "day")
        assert [(r["day"], r["images"], r["characters"]) for r in by_day] == [
            ("2026-03-01", 1, 4096),
            ("2026-03-02", 2, 1000),
        ]
        assert await queries.cost_micro(UsageFilter(key_id=key_id)) == 1_113_478
    finally:
        await engine.dispose()
