"""A gateway whose Redis goes away and comes back: no crash, fallback per policy, recovery."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.scale.conftest import PrivateRedis
from tests.support import Gateway

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _post(gateway: Gateway, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def _wait_healthy(gateway: Gateway, timeout_s: float = 5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        redis = gateway.state.redis
        if redis is not None and redis.backend.healthy:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_gateway_survives_a_redis_outage(
    policy: str,
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    private_redis: PrivateRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = gateway_factory(
        [openai_channel(fake_openai)],
        redis_url=private_redis.url,
        redis_failure_policy=policy,
    )
    assert gateway.state.redis is not None
    limited = gateway.create_key("limited", rpm=100, budget_micro=1_000_000)
    unlimited = gateway.create_key("unlimited", budget_micro=1_000_000)
    assert _post(gateway, limited).status_code == 200

    private_redis.kill()
    with caplog.at_level(logging.ERROR, logger="sluice.redis"):
        statuses = [_post(gateway, limited).status_code for _ in range(3)]
        if policy == "open":
            assert statuses == [200, 200, 200]  # per-replica in-memory limits
        else:
            assert statuses == [503, 503, 503]
            body = _post(gateway, limited).json()
            assert body["error"]["code"] == "rate_limiter_unavailable"
        assert _post(gateway, unlimited).status_code == 200  # budget via the fallback ledger
    lines = [r for r in caplog.records if "redis unreachable" in r.getMessage()]
    assert len(lines) == 1

    private_redis.start()
    assert _wait_healthy(gateway)
    assert _post(gateway, limited).status_code == 200
    gateway.flush()
    spent = gateway.key_record(unlimited).spent_micro
    assert spent == sum(r["cost_micro"] for r in gateway.usage_rows(unlimited))
