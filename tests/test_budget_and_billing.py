"""Budgets under concurrency, the legacy billing endpoints, and rate-limit headers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import httpx
import pytest

from sluice.storage.usage_sink import UsageRow
from tests.support import Gateway

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_budget_holds_under_50_concurrent_requests(gateway: Gateway) -> None:
    budget = 400  # micro-dollars; one request costs 23 (11 prompt @ $1/M + 6 completion @ $2/M)
    key = gateway.create_key("race", budget_micro=budget)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:

        async def one() -> int:
            response = await client.post("/chat/completions", json=CHAT, headers=_auth(key))
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "insufficient_quota"
            return response.status_code

        statuses: list[int] = []
        for _ in range(4):  # waves of 50 until the budget is exhausted
            statuses += await asyncio.gather(*(one() for _ in range(50)))
    gateway.flush()
    rows = [r for r in gateway.usage_rows(key) if r["status"] == 200]
    spent = gateway.key_record(key).spent_micro
    one_request = 23
    assert statuses.count(200) == len(rows) >= 10
    assert spent == sum(r["cost_micro"] for r in rows)
    assert spent <= budget + one_request, "at most one request's cost over budget"
    assert statuses[-50:] == [429] * 50, "after the budget is used up every request is refused"


def test_billing_subscription_shapes(gateway: Gateway) -> None:
    expiry = time.time() + 86_400
    limited = gateway.create_key("limited", budget_micro=12_500_000, expires_at=expiry)
    unlimited = gateway.create_key("unlimited")
    for prefix in ("", "/v1"):
        body = httpx.get(
            f"{gateway.url}{prefix}/dashboard/billing/subscription", headers=_auth(limited)
        ).json()
        assert body == {
            "object": "billing_subscription",
            "has_payment_method": True,
            "soft_limit_usd": 12.5,
            "hard_limit_usd": 12.5,
            "system_hard_limit_usd": 12.5,
            "access_until": int(expiry),
        }
    body = httpx.get(
        f"{gateway.url}/dashboard/billing/subscription", headers=_auth(unlimited)
    ).json()
    assert body["hard_limit_usd"] == 100_000_000 and body["access_until"] == 0


def _row(key_id: str, when: dt.datetime, cost: int) -> UsageRow:
    return UsageRow(
        request_id=f"req-{when.isoformat()}-{cost}", key_id=key_id, endpoint="chat",
        model="test-model", upstream_model="test-model", channel="fake", prompt_tokens=1,
        cached_tokens=0, completion_tokens=1, cost_micro=cost, status=200, error_code=None,
        latency_ms=1.0, ttft_ms=None, stream=False, created_at=when.timestamp(),
    )  # fmt: skip


def test_billing_usage_honours_date_range(gateway: Gateway) -> None:
    key = gateway.create_key("usage")
    other = gateway.create_key("other")
    key_id, other_id = gateway.key_record(key).id, gateway.key_record(other).id
    utc = dt.UTC
    for when, cost, owner in [
        (dt.datetime(2026, 10, 31, 23, 59, tzinfo=utc), 1_000_000, key_id),
        (dt.datetime(2026, 11, 1, 0, 0, tzinfo=utc), 123_456, key_id),
        (dt.datetime(2026, 11, 15, 12, 0, tzinfo=utc), 7, key_id),
        (dt.datetime(2026, 11, 15, 12, 0, tzinfo=utc), 999_999, other_id),
        (dt.datetime(2026, 12, 1, 0, 0, tzinfo=utc), 50_000, key_id),
    ]:
        gateway.state.usage_sink.record(_row(owner, when, cost))
    gateway.flush()

    def usage(query: str) -> Any:
        response = httpx.get(
            f"{gateway.url}/v1/dashboard/billing/usage?{query}", headers=_auth(key)
        )
        assert response.status_code == 200, response.text
        return response.json()

    november = usage("start_date=2026-11-01&end_date=2026-12-01")
    assert november == {"object": "list", "total_usage": pytest.approx(12.3463)}
    assert usage("start_date=2026-11-15&end_date=2026-11-16")["total_usage"] == pytest.approx(
        0.0007
    )
    assert usage("")["total_usage"] == pytest.approx(117.3463)
    bad = httpx.get(
        f"{gateway.url}/dashboard/billing/usage?start_date=2026-12-01&end_date=2026-11-01",
        headers=_auth(key),
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "end_date"


def test_rate_limit_headers_and_retry_after(gateway: Gateway) -> None:
    key = gateway.create_key("limited", rpm=2, tpm=100_000)
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        first = client.post("/chat/completions", json=CHAT, headers=_auth(key))
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-tokens"] == "100000"
        assert first.headers["x-ratelimit-reset-requests"]
        assert client.post("/chat/completions", json=CHAT, headers=_auth(key)).status_code == 200
        third = client.post("/chat/completions", json=CHAT, headers=_auth(key))
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["x-ratelimit-remaining-requests"] == "0"


def test_tpm_limit_counts_tokens(gateway: Gateway) -> None:
    key = gateway.create_key("tpm", tpm=60)
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        big = {**CHAT, "max_tokens": 100}
        response = client.post("/chat/completions", json=big, headers=_auth(key))
    assert response.status_code == 429
    assert "tokens" in response.json()["error"]["message"]
    assert response.headers["x-ratelimit-limit-tokens"] == "60"


def test_cors_preflight_is_answered(gateway: Gateway) -> None:
    response = httpx.options(
        f"{gateway.base_url}/chat/completions",
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "https://chat.example")
    assert "POST" in response.headers["access-control-allow-methods"]
