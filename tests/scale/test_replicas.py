"""Three ``sluice serve`` processes sharing PostgreSQL + Redis: budgets, limits, invalidation."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from sluice.storage.db import create_engine
from sluice.storage.schema import api_keys, usage
from tests.fakes.openai_upstream import FakeOpenAI
from tests.scale.replicas import SLUICE, ReplicaSet, replica_config
from tests.support import ADMIN_KEY

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture
def replicas(
    pg_url: str, redis_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> Iterator[ReplicaSet]:
    config = replica_config(tmp_path / "sluice.yaml", pg_url, redis_url, fake_openai.base_url)
    group = ReplicaSet()
    try:
        group.start(config, 3, tmp_path)  # three fresh replicas migrate the empty database at once
        yield group
    finally:
        group.stop()


def _create_key(base: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(f"{base}/admin/keys", json={"name": "k", **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _burst(
    urls: list[str], key: str, count: int, *, mixed: bool = False
) -> list[httpx.Response]:
    """``count`` concurrent chat requests round-robin over ``urls``; ``mixed``: every other
    one streams."""
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{urls[i % len(urls)]}/v1/chat/completions",
                    json={**CHAT, "stream": bool(mixed and i % 2)},
                    headers={"authorization": f"Bearer {key}"},
                )
                for i in range(count)
            )
        )


def _code(response: httpx.Response) -> str | None:
    if response.status_code == 200:
        return None
    code: str | None = response.json()["error"]["code"]
    return code


def _wait_for_quiet_minute() -> None:
    """Keep a burst inside one rate-limit window (the test is about the count, not the edge)."""
    into = time.time() % 60
    if into > 55:
        time.sleep(60.5 - into)


async def _db_totals(database_url: str, key_id: str) -> tuple[int, int, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            spent = (
                await conn.execute(select(api_keys.c.spent_micro).where(api_keys.c.id == key_id))
            ).scalar_one()
            rows, total = (
                await conn.execute(
                    select(func.count(), func.coalesce(func.sum(usage.c.cost_micro), 0)).where(
                        usage.c.key_id == key_id
                    )
                )
            ).one()
        return int(spent), int(rows), int(total)
    finally:
        await engine.dispose()


def test_three_replicas_share_budget_limits_and_invalidation(
    replicas: ReplicaSet, pg_url: str, tmp_path: Path
) -> None:
    urls = [r.url for r in replicas.replicas]

    # --- global rate limit: 60 rpm, 200 concurrent requests spread over 3 replicas -----------
    limited = _create_key(urls[0], rpm=60)
    _wait_for_quiet_minute()
    responses = asyncio.run(_burst(urls, limited["key"], 200))
    codes = [_code(r) for r in responses]
    assert codes.count(None) == 60, [r.text for r in responses if r.status_code >= 500][:3]
    assert codes.count("rate_limit_exceeded") == 140
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["x-ratelimit-limit-requests"] == "60" and refused.headers["retry-after"]

    # --- exact budget: mixed concurrent load, then sequential until refused --------------------
    budget_usd = 0.0006
    budgeted = _create_key(urls[1], budget_usd=budget_usd)
    burst = asyncio.run(_burst(urls, budgeted["key"], 40, mixed=True))
    assert {_code(r) for r in burst} <= {None, "insufficient_quota"}
    cost = None
    refusals = 0
    for i in range(60):
        response = asyncio.run(_burst([urls[i % 3]], budgeted["key"], 1))[0]
        if response.status_code == 200:
            usage_body = response.json()["usage"]
            cost = usage_body["prompt_tokens"] * 1 + usage_body["completion_tokens"] * 2
            assert refusals == 0, "a request succeeded after the budget refused one"
        else:
            assert _code(response) == "insufficient_quota"
            refusals += 1
            if refusals >= 6:  # two per replica after crossing: all refused
                break
    assert refusals >= 6 and cost is not None
    time.sleep(0.5)  # sinks flush every 50 ms
    spent, rows, total = asyncio.run(_db_totals(pg_url, budgeted["id"]))
    assert spent == total  # PostgreSQL spent is exactly the sum of the key's usage rows
    assert rows > 10
    assert spent <= budget_usd * 1_000_000 + cost

    # --- invalidation: disable via one replica, every replica refuses within 1 s --------------
    victim = _create_key(urls[2])
    for url in urls:  # every replica now has the key cached (TTL 60 s)
        assert asyncio.run(_burst([url], victim["key"], 1))[0].status_code == 200
    disabled = httpx.post(f"{urls[1]}/admin/keys/{victim['id']}/disable", headers=ADMIN)
    assert disabled.status_code == 200
    _assert_all_refuse_within(urls, victim["key"], 1.0)

    # --- the CLI publishes too -------------------------------------------------------------
    cli_victim = _create_key(urls[0])
    for url in urls:
        assert asyncio.run(_burst([url], cli_victim["key"], 1))[0].status_code == 200
    cli = subprocess.run(
        [SLUICE, "keys", "disable", cli_victim["id"], "--config", str(tmp_path / "sluice.yaml")],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr.decode()
    _assert_all_refuse_within(urls, cli_victim["key"], 1.0)


def _assert_all_refuse_within(urls: list[str], key: str, limit_s: float) -> None:
    started = time.monotonic()
    pending = set(urls)
    while pending and time.monotonic() - started < limit_s:
        for url in list(pending):
            if asyncio.run(_burst([url], key, 1))[0].status_code == 401:
                pending.discard(url)
        time.sleep(0.02)
    assert not pending, f"still accepted a disabled key after {limit_s} s: {pending}"
