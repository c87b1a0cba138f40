"""A gateway on PostgreSQL whose database goes away: cached keys keep working, unknown keys get a
fast 503, usage rows wait in the buffer and land when the database returns."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.scale.conftest import admin_connection

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


async def _set_database_available(name: str, available: bool) -> None:
    conn, _ = await admin_connection()
    try:
        flag = "true" if available else "false"
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {flag}')
        if not available:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await conn.close()


def _post(base_url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {key}"},
        timeout=15,
    )


def test_database_outage_serves_cached_keys_and_buffers_usage(
    pg_url: str, gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    name = pg_url.rsplit("/", 1)[1]
    gateway = gateway_factory(
        [openai_channel(fake_openai)], database_url=pg_url, limits={"key_cache_ttl_s": 60}
    )
    cached = gateway.create_key("cached", budget_micro=1_000_000)
    unknown = gateway.create_key("never-used")
    assert _post(gateway.base_url, cached).status_code == 200
    gateway.flush()

    asyncio.run(_set_database_available(name, False))
    try:
        assert _post(gateway.base_url, cached).status_code == 200  # key and budget in memory
        started = time.monotonic()
        refused = _post(gateway.base_url, unknown)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "database_unavailable"
        assert time.monotonic() - started < 6
        deadline = time.monotonic() + 5
        while gateway.state.usage_sink.depth == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.state.usage_sink.depth == 1  # the completed request's row, kept
    finally:
        asyncio.run(_set_database_available(name, True))
    deadline = time.monotonic() + 10
    while gateway.state.usage_sink.depth and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gateway.state.usage_sink.depth == 0
    rows = gateway.usage_rows(cached)
    assert len(rows) == 2
    assert gateway.key_record(cached).spent_micro == sum(r["cost_micro"] for r in rows)
    assert _post(gateway.base_url, unknown).status_code == 200
