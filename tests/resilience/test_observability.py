"""Prometheus metrics, request ids end to end, and access logs that never leak secrets."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.resilience.conftest import UPSTREAM_KEY, channel, fast_settings
from tests.resilience.helpers import chat, stream_events

Make = Callable[[str], FaultyUpstream]
PROMPT = "my confidential prompt PINEAPPLE-7731"


def test_metrics_cover_requests_errors_retries_circuits_tokens(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a, b = faulty("a").set("status", status=503), faulty("b")
    gateway = gateway_factory(
        [channel(a, priority=1), channel(b)],
        **fast_settings(circuit={"consecutive_failures": 2}),
    )
    key = gateway.create_key("metrics", budget_micro=10_000_000)
    for _ in range(3):
        assert chat(gateway, key).status_code == 200
    assert chat(gateway, key, stream=True).status_code == 200
    response = httpx.get(gateway.url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in [
        'sluice_relay_requests_total{channel="b",endpoint="chat",model="test-resilience",'
        'status="200"} 4.0',
        'sluice_upstream_errors_total{channel="a",kind="server"} 2.0',
        'sluice_retries_total{endpoint="chat"} 2.0',
        'sluice_circuit_state{channel="a",model=""} 2.0',
        'sluice_tokens_total{model="test-resilience",type="completion"} 24.0',
        'sluice_relay_ttft_seconds_count{model="test-resilience"} 1.0',
        'sluice_relay_latency_seconds_count{endpoint="chat",model="test-resilience"} 4.0',
        'sluice_http_requests_total{method="POST",route="chat_completions",status="200"} 4.0',
        "sluice_usage_queue_depth ",
        "sluice_cost_micro_usd_total{",
    ]:
        assert line in text, line


def test_multiprocess_mode_aggregates_workers(tmp_path: Path) -> None:
    """Two 'workers' (processes) write to one PROMETHEUS_MULTIPROC_DIR; a scrape sums them."""
    code = (
        "from sluice.observability.metrics import Metrics\n"
        "m = Metrics(); m.retry('chat'); m.retry('chat')\n"
        "print(m.render()[0].decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout  # fmt: skip
        for _ in range(2)
    ]
    assert 'sluice_retries_total{endpoint="chat"} 2.0' in outputs[0]
    assert 'sluice_retries_total{endpoint="chat"} 4.0' in outputs[1]


def test_request_id_is_echoed_sent_upstream_and_keys_the_usage_row(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a = faulty("a")
    gateway = gateway_factory([channel(a)], **fast_settings())
    key = gateway.create_key("rid", budget_micro=10_000_000)
    response = chat(gateway, key, headers={"x-request-id": "client-chosen-123"})
    assert response.headers["x-request-id"] == "client-chosen-123"
    assert a.hits[-1].request_id == "client-chosen-123"
    assert gateway.usage_rows(key)[-1]["request_id"] == "client-chosen-123"
    generated = chat(gateway, key, stream=True)
    rid = generated.headers["x-request-id"]
    assert rid.startswith("req_") and a.hits[-1].request_id == rid
    bad = chat(gateway, key, headers={"x-request-id": "bad id\twith spaces"})
    assert bad.headers["x-request-id"].startswith("req_")
    for response in (
        httpx.get(gateway.url + "/nope", timeout=10),
        chat(gateway, "sk-wrong-key-000000000"),
        httpx.get(gateway.url + "/healthz", timeout=10),
        httpx.get(gateway.url + "/metrics", timeout=10),
    ):
        assert response.headers["x-request-id"].startswith("req_"), response


def _exercise(gateway_factory: GatewayFactory, faulty: Make, **extra: object) -> tuple[str, str]:
    a, b = faulty("a").set("auth"), faulty("b")
    gateway = gateway_factory([channel(a, priority=1), channel(b)], **fast_settings(**extra))
    key = gateway.create_key("logs", budget_micro=10_000_000)
    messages = [{"role": "user", "content": PROMPT}]
    assert chat(gateway, key, messages=messages).status_code == 200
    streamed = chat(gateway, key, messages=messages, stream=True)
    assert stream_events(streamed)[-1] == "[DONE]"
    assert chat(gateway, key + "x", messages=messages).status_code == 401
    assert chat(gateway, key, messages=messages, model="unknown-model").status_code == 404
    gateway.flush()
    return key, gateway.admin_key


def test_logs_never_contain_keys_or_prompts(
    gateway_factory: GatewayFactory, faulty: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sluice")
    caplog.set_level(logging.INFO)
    key, admin_key = _exercise(gateway_factory, faulty)
    access = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "sluice.access"]
    assert len(access) >= 4
    assert {line["status"] for line in access} >= {200, 401, 404}
    assert all(line["request_id"] for line in access)
    assert any(line.get("model") == "test-resilience" and line.get("key_id") for line in access)
    everything = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (UPSTREAM_KEY, key, key[:12], admin_key, PROMPT, "PINEAPPLE"):
        assert secret not in everything, f"leaked into logs: {secret[:6]}…"


def test_log_bodies_opt_in_logs_the_request_body(
    gateway_factory: GatewayFactory, faulty: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sluice.access")
    _exercise(gateway_factory, faulty, log_bodies=True)
    bodies = [orjson.loads(r.getMessage()).get("body", "") for r in caplog.records
              if r.name == "sluice.access"]  # fmt: skip
    assert any("PINEAPPLE" in body for body in bodies), "positive control for the leak test"
