"""The proof: 1,000 requests against three channels, one failing half the time, one down.

Figures are printed (run with ``-s``) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.resilience.conftest import MODEL, channel
from tests.support import Gateway, LoopThread

Make = Callable[[str], FaultyUpstream]
REQUESTS = 1_000
CONCURRENCY = 50
STREAM_EVERY = 5  # every fifth request streams

SETTINGS: dict[str, Any] = {
    # Generous defaults so a busy CI box cannot time out the healthy channel; the flaky one
    # gets a tight per-channel first-byte timeout so its slow answers fail over quickly.
    "timeouts": {"connect_s": 1.0, "first_byte_s": 5.0, "idle_s": 5.0, "total_s": 30.0},
    "retry": {"max_attempts": 3, "deadline_s": 10.0, "max_retry_after_s": 0.05},
    "circuit": {"cooldown_s": 0.5},
}


async def _one(client: httpx.AsyncClient, gateway: Gateway, key: str, i: int) -> dict[str, Any]:
    stream = i % STREAM_EVERY == 0
    payload = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    response = await client.post(f"{gateway.base_url}/chat/completions", json=payload,
                                 headers={"authorization": f"Bearer {key}"})  # fmt: skip
    ok = response.status_code == 200
    if ok and stream:
        ok = response.text.rstrip().endswith("data: [DONE]") and '"error"' not in response.text
    return {
        "ok": ok,
        "status": response.status_code,
        "request_id": response.headers.get("x-request-id"),
        "latency": time.monotonic() - started,
    }


async def _drive(gateway: Gateway, key: str, count: int) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def bounded(i: int) -> dict[str, Any]:
            async with semaphore:
                return await _one(client, gateway, key, i)

        return await asyncio.gather(*(bounded(i) for i in range(count)))


def _billing_checks(gateway: Gateway, key: str, results: list[dict[str, Any]]) -> list[Any]:
    rows = gateway.usage_rows(key)
    per_request = Counter(r["request_id"] for r in rows)
    assert len(rows) == len(results), "one usage row per request"
    assert set(per_request.values()) == {1}, "no request billed twice"
    assert set(per_request) == {r["request_id"] for r in results}
    spent = gateway.key_record(key).spent_micro
    assert spent == sum(r["cost_micro"] for r in rows), "spent equals the sum of the rows"
    return rows


# Breaker off: the retry policy alone must carry the load (every fault reaches a request).
NO_BREAKER = {"consecutive_failures": 1_000_000, "error_rate": 1.0, "min_requests": 1_000_000}


@pytest.mark.parametrize("breaker", ["on", "off"])
async def test_thousand_requests_with_one_channel_flaky_and_one_down(
    gateway_factory: GatewayFactory, faulty: Make, loop_thread: LoopThread, breaker: str
) -> None:
    flaky, down, healthy = faulty("flaky"), faulty("down"), faulty("healthy")
    flaky.set("mixed", fail_rate=0.5, retry_after=0.05, delay_s=1.0)
    loop_thread.run(down.down())  # connection refused from the first request on
    settings = dict(SETTINGS)
    if breaker == "off":
        settings["circuit"] = NO_BREAKER
    channels = [channel(flaky, first_byte_timeout_s=0.3), channel(down), channel(healthy)]
    gateway = gateway_factory(channels, **settings)
    key = gateway.create_key("faults", budget_micro=100_000_000)
    started = time.monotonic()
    results = await _drive(gateway, key, REQUESTS)
    elapsed = time.monotonic() - started
    rows = await asyncio.to_thread(_billing_checks, gateway, key, results)
    succeeded = sum(r["ok"] for r in results)
    latencies = sorted(r["latency"] for r in results)
    figures = {
        "breaker": breaker,
        "requests": REQUESTS,
        "succeeded": succeeded,
        "success_rate": succeeded / REQUESTS,
        "statuses": {str(k): v for k, v in Counter(r["status"] for r in results).items()},
        "upstream_attempts": len(flaky.hits) + len(healthy.hits),
        "flaky_faults_injected": sum(h.faulted for h in flaky.hits),
        "billed_rows": len(rows),
        "rows_per_request_max": 1,
        "spent_micro": sum(r["cost_micro"] for r in rows),
        "elapsed_s": round(elapsed, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
    }
    print("FAULT-SUITE " + orjson.dumps(figures).decode())
    assert succeeded / REQUESTS >= 0.999, figures
    assert all(r["channel"] in ("flaky", "healthy") for r in rows if r["status"] == 200)
    served = Counter(h.request_id for h in [*flaky.hits, *healthy.hits] if not h.faulted)
    assert len(served) == REQUESTS, "every request was answered by a non-faulted upstream"
    # An answer slower than the flaky channel's 0.3 s first-byte limit (a busy machine) is
    # abandoned and retried: upstream work twice, yet billed once (checked above).
    late = sum(n - 1 for n in served.values())
    print(f"FAULT-SUITE abandoned late answers: {late}")
    assert late <= REQUESTS // 20


async def test_every_channel_down_gives_503_within_deadline_and_bills_nothing(
    gateway_factory: GatewayFactory, faulty: Make, loop_thread: LoopThread
) -> None:
    ups = [faulty(name) for name in ("x", "y", "z")]
    for upstream in ups:
        loop_thread.run(upstream.down())
    gateway = gateway_factory([channel(u) for u in ups], **SETTINGS)
    key = gateway.create_key("all-down", budget_micro=100_000_000)
    results = await _drive(gateway, key, 100)
    worst = max(r["latency"] for r in results)
    statuses = Counter(r["status"] for r in results)
    print(f"ALL-DOWN statuses={dict(statuses)} worst_latency_ms={worst * 1000:.0f}")
    assert statuses == {503: 100}
    assert worst < SETTINGS["retry"]["deadline_s"]
    rows = await asyncio.to_thread(_billing_checks, gateway, key, results)
    assert all(r["cost_micro"] == 0 for r in rows)
    assert gateway.key_record(key).spent_micro == 0
