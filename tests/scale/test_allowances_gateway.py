"""The gateway with Redis admits a busy key from allowances, end to end through the OpenAI SDK,
and what it charged and counted is exact once it has given its allowances back."""

from __future__ import annotations

import time

import openai
import redis

from sluice.keys import KeyRecord
from sluice.limits import LimitDecision
from sluice.redis_backend.ledger import RedisReservation
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.openapi_schema import validate_openai

LIMIT = 100_000
STREAMS = 5


def test_sequential_requests_of_one_key_are_admitted_from_an_allowance(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, redis_url: str
) -> None:
    if time.time() % 60 > 50:  # window counts are compared exactly: stay in one minute
        time.sleep(60.5 - time.time() % 60)
    gateway = gateway_factory([openai_channel(fake_openai)], redis_url=redis_url)
    secret = gateway.create_key("busy", rpm=LIMIT, tpm=100 * LIMIT, budget_micro=10_000_000)
    key_id = gateway.key_record(secret).id
    redis_services = gateway.state.redis
    assert redis_services is not None and redis_services.allowances is not None
    allowances = redis_services.allowances
    taken_locally: list[str] = []
    take = allowances.take

    def counting_take(
        key: KeyRecord, tokens: int, cost: int
    ) -> tuple[LimitDecision, RedisReservation] | None:
        taken = take(key, tokens, cost)
        if taken is not None:
            taken_locally.append(taken[1].key_id)
        return taken

    allowances.take = counting_take  # type: ignore[method-assign]
    remaining: list[int] = []
    with openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0) as client:
        for i in range(40):
            raw = client.chat.completions.with_raw_response.create(
                model="test-model",
                messages=[{"role": "user", "content": f"hi {i}"}],
                max_tokens=8,
            )
            assert raw.http_response.status_code == 200
            validate_openai("CreateChatCompletionResponse", raw.http_response.json())
            remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        for i in range(STREAMS):  # streams too: settled when their frames end
            chunks = list(
                client.chat.completions.create(
                    model="test-model",
                    messages=[{"role": "user", "content": f"stream {i}"}],
                    max_tokens=8,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert chunks[-1].usage is not None and chunks[-1].choices == []
    # The first two are admitted exactly; most later ones from an allowance, with no I/O.
    assert len(taken_locally) >= 20 and set(taken_locally) == {key_id}
    assert remaining[0] == LIMIT - 1
    assert all(LIMIT - 40 - 1024 <= r < LIMIT for r in remaining)

    rows = gateway.usage_rows(secret)
    assert len(rows) == 40 + STREAMS and {r["status"] for r in rows} == {200}
    assert sum(r["stream"] for r in rows) == STREAMS
    spent = gateway.key_record(secret).spent_micro
    assert spent == sum(r["cost_micro"] for r in rows) > 0
    assert len(fake_openai.received) == 40 + STREAMS

    counters = redis.Redis.from_url(redis_url, decode_responses=True)
    tag = f"{{sluice:key:{key_id}}}"
    try:
        # Settlements of requests admitted from an allowance reach Redis in batches, soon.
        deadline = time.monotonic() + 2
        while int(counters.hget(f"{tag}:budget", "spent") or 0) != spent:
            assert time.monotonic() < deadline, "batched settlements never reached Redis"
            time.sleep(0.01)
        gateway.stop()  # gives the unused part of every allowance back
        budget = counters.hgetall(f"{tag}:budget")
        assert int(budget["reserved"]) == 0
        assert int(budget["spent"]) == spent
        assert int(counters.hget(f"{tag}:rpm", "cur") or 0) == 40 + STREAMS
        tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
        assert int(counters.hget(f"{tag}:tpm", "cur") or 0) == tokens
        assert counters.zcard(f"{tag}:leases") == 0
    finally:
        counters.close()
