"""PostgreSQL: concurrent migrations, concurrent usage sinks, prune + reports, 503 on outage."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from sluice.auth import KeyCache
from sluice.errors import ServiceUnavailable
from sluice.keys import generate_key
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import current_revision, upgrade_database
from sluice.storage.prune import prune_usage
from sluice.storage.schema import api_keys, usage, usage_daily
from sluice.storage.usage_queries import UsageFilter, UsageQueries
from sluice.storage.usage_sink import UsageRow, UsageSink
from tests.support import free_port

SLUICE = str(Path(sys.executable).with_name("sluice"))
DAY = 86_400.0
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()


def _row(
    key_id: str, cost: int, created_at: float, model: str = "m", channel: str | None = "c"
) -> UsageRow:
    return UsageRow(
        request_id=uuid.uuid4().hex, key_id=key_id, endpoint="chat", model=model,
        upstream_model=model, channel=channel, prompt_tokens=3, cached_tokens=0,
        completion_tokens=2, cost_micro=cost, status=200, error_code=None, latency_ms=1.0,
        ttft_ms=None, stream=False, created_at=created_at,
    )  # fmt: skip


def _write_config(path: Path, database_url: str, **extra: Any) -> Path:
    lines = [f"database_url: {database_url}", "admin_key: sk-admin-test-0123456789abcdef0123456789"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_three_concurrent_migrations_on_a_fresh_database(pg_url: str, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "sluice.yaml", pg_url)
    procs = [
        subprocess.Popen(
            [SLUICE, "migrate", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(3)
    ]
    try:
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1].decode()[-500:] for o in outputs]

    async def check() -> str | None:
        engine = create_engine(pg_url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(check()) is not None


async def _seed_keys(engine: Any, count: int) -> list[str]:
    store = KeyStore(engine)
    return [(await store.create(f"k{i}")).record.id for i in range(count)]


async def test_three_sinks_at_full_load_no_deadlock_exact_spent(pg_url: str) -> None:
    engines = [create_engine(pg_url) for _ in range(3)]
    try:
        await asyncio.gather(*(upgrade_database(e) for e in engines))
        key_ids = await _seed_keys(engines[0], 5)
        sinks = [UsageSink(e, interval_s=0.005, batch_rows=50) for e in engines]
        for sink in sinks:
            sink.start()
        expected: dict[str, int] = dict.fromkeys(key_ids, 0)
        for i in range(3000):
            # Every sink touches every key in every batch, in varying order: the classic
            # deadlock shape if updates were not ordered.
            key_id = key_ids[(i * 7 + i // 3) % len(key_ids)]
            cost = 1 + i % 13
            expected[key_id] += cost
            sinks[i % 3].record(_row(key_id, cost, T0 + i))
            if i % 100 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*(s.close() for s in sinks))
        assert all(s.depth == 0 and s.dropped == 0 for s in sinks)
        async with engines[0].connect() as conn:
            spent = dict((await conn.execute(select(api_keys.c.id, api_keys.c.spent_micro))).all())
            sums = dict(
                (
                    await conn.execute(
                        select(usage.c.key_id, func.sum(usage.c.cost_micro)).group_by(
                            usage.c.key_id
                        )
                    )
                ).all()
            )
        assert {k: int(v) for k, v in sums.items()} == expected
        assert {k: int(v) for k, v in spent.items()} == expected
    finally:
        for engine in engines:
            await engine.dispose()


async def _prune_scenario(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        key_a, key_b = await _seed_keys(engine, 2)
        sink = UsageSink(engine)
        # Days 0..3 from T0, two models, a null channel, two keys.
        for day in range(4):
            for n in range(5):
                when = T0 + day * DAY + n * 3600
                sink.record(_row(key_a, 10 * (day + 1) + n, when, model=f"m{n % 2}"))
                sink.record(_row(key_b, 7, when, channel=None))
        await sink.close()
        queries = UsageQueries(engine)
        filters = [
            UsageFilter(),
            UsageFilter(key_id=key_a),
            UsageFilter(key_id=key_a, since=T0 + DAY, until=T0 + 3 * DAY),
            UsageFilter(key_id=key_b, since=T0, until=T0 + 2 * DAY),
            UsageFilter(model="m1"),
        ]
        groups = [None, "day", "model", "key", "channel"]
        before = [await queries.cost_micro(f) for f in filters]
        reports = [await queries.summary(UsageFilter(), g) for g in groups]  # type: ignore[arg-type]
        first = await prune_usage(engine, T0 + 2 * DAY)
        assert first.rows_deleted == 20
        # A second prune over an overlapping range adds to existing daily totals.
        sink.record(_row(key_a, 1000, T0 + 0.5 * DAY, model="m0"))
        await sink.close()
        second = await prune_usage(engine, T0 + 3 * DAY)
        assert second.rows_deleted == 11
        after = [await queries.cost_micro(f) for f in filters]
        assert after[0] == before[0] + 1000
        assert after[1] == before[1] + 1000
        assert after[2:] == [before[2], before[3], before[4]]
        reports_after = [await queries.summary(UsageFilter(), g) for g in groups]  # type: ignore[arg-type]
        assert reports_after[0][0]["requests"] == reports[0][0]["requests"] + 1
        by_model = ({r["model"]: r for r in rep} for rep in (reports[2], reports_after[2]))
        model_before, model_after = by_model
        assert model_after["m1"] == model_before["m1"]
        assert model_after["m0"]["cost_micro"] == model_before["m0"]["cost_micro"] + 1000
        by_key = ({r["key"]: r for r in rep} for rep in (reports[3], reports_after[3]))
        key_before, key_after = by_key
        assert key_after[key_b] == key_before[key_b]
        assert key_after[key_a]["requests"] == key_before[key_a]["requests"] + 1
        assert reports_after[4] == [
            {**r, "requests": r["requests"] + 1, "prompt_tokens": r["prompt_tokens"] + 3,
             "completion_tokens": r["completion_tokens"] + 2,
             "cost_micro": r["cost_micro"] + 1000, "cost_usd": (r["cost_micro"] + 1000) / 1e6}
            if r["channel"] == "c" else r
            for r in reports[4]
        ]  # fmt: skip
        days_before = {r["day"]: r for r in reports[1]}
        days_after = {r["day"]: r for r in reports_after[1]}
        assert days_after["2026-03-03"] == days_before["2026-03-03"]
        assert days_after["2026-03-04"] == days_before["2026-03-04"]
        async with engine.connect() as conn:
            left = (await conn.execute(select(func.count()).select_from(usage))).scalar_one()
            daily = (await conn.execute(select(func.count()).select_from(usage_daily))).scalar_one()
        assert left == 10 and daily > 0
    finally:
        await engine.dispose()


async def test_prune_keeps_reports_and_billing_on_postgres(pg_url: str) -> None:
    await _prune_scenario(pg_url)


async def test_prune_keeps_reports_and_billing_on_sqlite(tmp_path: Path) -> None:
    await _prune_scenario(f"sqlite:///{tmp_path / 'prune.db'}")


def test_cli_usage_prune(pg_url: str, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "sluice.yaml", pg_url)

    async def seed() -> str:
        engine = create_engine(pg_url)
        try:
            await upgrade_database(engine)
            (key_id,) = await _seed_keys(engine, 1)
            sink = UsageSink(engine)
            for i in range(6):
                sink.record(_row(key_id, 100, T0 + i * DAY / 2))
            await sink.close()
            return key_id
        finally:
            await engine.dispose()

    asyncio.run(seed())
    env = {**os.environ, "SLUICE_CONFIG": str(config)}
    run = subprocess.run(
        [SLUICE, "usage", "prune", "--before", "2026-03-03"], capture_output=True, env=env,
        timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    assert b"Pruned 4 usage rows" in run.stdout
    report = subprocess.run(
        [SLUICE, "usage", "--json", "--by", "day"], capture_output=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr.decode()
    assert b'"2026-03-01"' in report.stdout and b'"2026-03-03"' in report.stdout
    total = subprocess.run(
        [SLUICE, "usage", "--json"], capture_output=True, env=env, timeout=60, check=False
    )
    assert json.loads(total.stdout)[0]["cost_micro"] == 600  # 4 pruned + 2 live rows


async def test_key_lookup_fails_fast_with_503_when_the_database_is_down() -> None:
    from sluice.state import _guarded_loader

    dead = f"postgresql://root@127.0.0.1:{free_port()}/nothing"
    engine = create_engine(dead)
    try:
        cache = KeyCache(_guarded_loader(KeyStore(engine)), ttl_s=5)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ServiceUnavailable) as caught:
            await cache.lookup(generate_key())
        assert caught.value.http_status == 503
        assert asyncio.get_running_loop().time() - started < 6
    finally:
        await engine.dispose()


async def test_usage_rows_survive_a_database_outage(pg_url: str) -> None:
    """Rows recorded while PostgreSQL refuses writes stay buffered and land when it returns."""
    engine = create_engine(pg_url)
    try:
        await upgrade_database(engine)
        (key_id,) = await _seed_keys(engine, 1)
        async with engine.begin() as conn:
            # Simulate the outage for this table only: writes fail until the table is back.
            await conn.execute(text("ALTER TABLE usage RENAME TO usage_away"))
        sink = UsageSink(engine, interval_s=0.01)
        sink.start()
        for i in range(10):
            sink.record(_row(key_id, 5, T0 + i))
        await asyncio.sleep(0.3)
        assert sink.depth == 10
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE usage_away RENAME TO usage"))
        for _ in range(100):
            if sink.depth == 0:
                break
            await asyncio.sleep(0.05)
        await sink.close()
        async with engine.connect() as conn:
            spent = (
                await conn.execute(select(api_keys.c.spent_micro).where(api_keys.c.id == key_id))
            ).scalar_one()
        assert spent == 50
    finally:
        await engine.dispose()


async def _round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        (key_id,) = await _seed_keys(engine, 1)
        full = UsageRow(
            request_id="req_full", key_id=key_id, endpoint="chat", model="m-full",
            upstream_model="up-full", channel="ch", prompt_tokens=11, cached_tokens=4,
            completion_tokens=7, cost_micro=123_456_789_012, status=499,
            error_code="client_closed_request", latency_ms=12.5, ttft_ms=3.25, stream=True,
            created_at=T0 + 0.125,
        )  # fmt: skip
        bare = replace(
            full, request_id="req_bare", upstream_model=None, channel=None, error_code=None,
            ttft_ms=None, stream=False, status=200, cost_micro=0,
        )  # fmt: skip
        sink = UsageSink(engine)
        sink.record(full)
        sink.record(bare)
        assert await sink.flush() == 2
        columns = [usage.c[f.name] for f in fields(UsageRow)]
        async with engine.connect() as conn:
            stored = (await conn.execute(select(*columns).order_by(usage.c.request_id))).all()
            spent = (
                await conn.execute(select(api_keys.c.spent_micro, api_keys.c.last_used_at))
            ).one()
        assert [UsageRow(*r) for r in stored] == [bare, full]
        assert tuple(spent) == (123_456_789_012, T0 + 0.125)
    finally:
        await engine.dispose()


async def test_usage_rows_round_trip_every_field_on_postgres(pg_url: str) -> None:
    await _round_trip(pg_url)  # written through asyncpg directly (storage/usage_pg.py)


async def test_usage_rows_round_trip_every_field_on_sqlite(tmp_path: Path) -> None:
    await _round_trip(f"sqlite:///{tmp_path / 'sluice.db'}")


async def _failed_flush_keeps_rows(database_url: str, make_trigger: str, drop: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        (key_id,) = await _seed_keys(engine, 1)
        async with engine.begin() as conn:
            for statement in make_trigger.split(";;"):
                await conn.execute(text(statement))
        sink = UsageSink(engine)
        for i in range(5):
            sink.record(_row(key_id, 10 + i, T0 + i))
        # The INSERT succeeds, the spent UPDATE fails: the transaction must undo both.
        assert await sink.flush() == 0
        assert sink.depth == 5
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(usage))).scalar() == 0
        async with engine.begin() as conn:
            await conn.execute(text(drop))
        assert await sink.flush() == 5
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(usage))).scalar() == 5
            spent = (await conn.execute(select(api_keys.c.spent_micro))).scalar()
        assert spent == sum(10 + i for i in range(5))
    finally:
        await engine.dispose()


async def test_a_failed_flush_keeps_its_rows_and_writes_them_once_on_postgres(
    pg_url: str,
) -> None:
    await _failed_flush_keeps_rows(
        pg_url,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused'; END $$;;"
        "CREATE TRIGGER refuse BEFORE UPDATE ON api_keys FOR EACH ROW EXECUTE FUNCTION refuse()",
        "DROP TRIGGER refuse ON api_keys",
    )


async def test_a_failed_flush_keeps_its_rows_and_writes_them_once_on_sqlite(
    tmp_path: Path,
) -> None:
    await _failed_flush_keeps_rows(
        f"sqlite:///{tmp_path / 'sluice.db'}",
        "CREATE TRIGGER refuse BEFORE UPDATE ON api_keys BEGIN SELECT RAISE(ABORT, 'refused'); END",
        "DROP TRIGGER refuse",
    )
