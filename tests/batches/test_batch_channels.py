"""Batches on other channel types and endpoints (Gemini chat, OpenAI embeddings), per-line
retries of retryable answers, and the batch list's pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from openai import OpenAI
from sqlalchemy import update

from sluice.storage.schema import batches
from tests.batches.conftest import (
    chat_line,
    claude_channel,
    fast_batches,
    jsonl,
    upstream_calls_by_line,
    wait_for_status,
)
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.anthropic_upstream import FakeAnthropic, error_body
from tests.fakes.gemini_upstream import UPSTREAM_KEY as GEMINI_KEY
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI, Scripted
from tests.support import LoopThread


@pytest.fixture
def fake_gemini(loop_thread: LoopThread) -> Iterator[FakeGemini]:
    fake = loop_thread.run(FakeGemini().start())
    yield fake
    loop_thread.run(fake.stop())
    assert not fake.violations, fake.violations


def _results(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(x) for x in client.files.content(file_id).content.splitlines()]


def test_a_chat_batch_through_a_gemini_channel(
    gateway_factory: GatewayFactory, fake_gemini: FakeGemini, sdk: Any
) -> None:
    channel = {"name": "gemini", "type": "gemini", "base_url": fake_gemini.base_url,
               "api_key": GEMINI_KEY, "models": ["test-gemini"],
               "model_map": {"test-gemini": "gemini-2.5-flash"}}  # fmt: skip
    gateway = gateway_factory([channel], batches=fast_batches())
    client: OpenAI = sdk(gateway, gateway.create_key("g"))
    lines = [chat_line(i, model="test-gemini") for i in range(12)]
    uploaded = client.files.create(file=("g.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for_status(client, batch.id, ("completed",), timeout_s=60)
    output = _results(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"req-{i}" for i in range(12))
    for line in output:
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert len(fake_gemini.received) == 12


def test_an_embeddings_batch(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, sdk: Any
) -> None:
    gateway = gateway_factory([openai_channel(fake_openai)], batches=fast_batches())
    client: OpenAI = sdk(gateway, gateway.create_key("e"))
    lines = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-small", "input": f"text {i}"}}
        for i in range(5)
    ]  # fmt: skip
    uploaded = client.files.create(file=("e.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done = wait_for_status(client, batch.id, ("completed",), timeout_s=60)
    output = _results(client, done.output_file_id)
    assert len(output) == 5
    for line in output:
        assert line["response"]["body"]["object"] == "list"
        assert line["response"]["body"]["data"][0]["object"] == "embedding"


def test_retryable_answers_are_tried_again_and_client_errors_are_not(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, sdk: Any
) -> None:
    gateway = gateway_factory(
        [claude_channel(fake_anthropic)],
        batches=fast_batches(concurrency=1, max_attempts=3, retry_backoff_s=0.05),
    )
    client: OpenAI = sdk(gateway, gateway.create_key("r"))
    overloaded = error_body("overloaded_error", "Overloaded")
    invalid = error_body("invalid_request_error", "FAKE: refused")
    fake_anthropic.script = [
        Scripted(status=529, body=overloaded),  # line 0: twice overloaded, then served
        Scripted(status=529, body=overloaded),
    ]
    uploaded = client.files.create(
        file=("r.jsonl", jsonl([chat_line(0), chat_line(1)])), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for_status(client, batch.id, ("completed",), timeout_s=60)
    assert done.request_counts is not None and done.request_counts.completed == 2
    assert upstream_calls_by_line(fake_anthropic) == {"line 0": 3, "line 1": 1}

    fake_anthropic.received.clear()
    fake_anthropic.script = [Scripted(status=400, body=invalid)]
    fake_anthropic.violations.clear()
    uploaded = client.files.create(file=("r2.jsonl", jsonl([chat_line(5)])), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for_status(client, batch.id, ("completed",), timeout_s=60)
    assert done.request_counts is not None and done.request_counts.failed == 1
    (line,) = _results(client, done.error_file_id)
    assert line["response"]["status_code"] == 400 and line["error"] is None
    assert line["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert upstream_calls_by_line(fake_anthropic) == {"line 5": 1}
    fake_anthropic.violations.clear()  # the scripted 400 is not a request the fake refused


def test_batches_are_listed_newest_first_in_pages(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, sdk: Any
) -> None:
    gateway = gateway_factory([claude_channel(fake_anthropic)], batches=fast_batches(enabled=False))
    client: OpenAI = sdk(gateway, gateway.create_key("p"))
    uploaded = client.files.create(file=("p.jsonl", jsonl([chat_line(0)])), purpose="batch")
    made = [
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(5)
    ]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    second = client.batches.list(limit=2, after=first.data[-1].id)
    assert [b.id for b in second.data] == made[::-1][2:4] and second.has_more
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]  # the SDK pages on
    # batches.enabled: false: this replica runs nothing; the batches wait, validating.
    assert {b.status for b in client.batches.list(limit=10).data} == {"validating"}
    assert fake_anthropic.received == []


def test_a_batch_past_its_window_expires_and_its_unstarted_lines_fail(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, sdk: Any
) -> None:
    gateway = gateway_factory(
        [claude_channel(fake_anthropic)],
        batches=fast_batches(concurrency=1, lines_per_second=5, max_active_per_worker=1),
    )
    client: OpenAI = sdk(gateway, gateway.create_key("x"))
    busy_file = client.files.create(
        file=("busy.jsonl", jsonl([chat_line(i) for i in range(100)])), purpose="batch"
    )
    busy = client.batches.create(
        input_file_id=busy_file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for_status(client, busy.id, ("in_progress",))  # the worker's one batch slot is taken
    late_file = client.files.create(
        file=("late.jsonl", jsonl([chat_line(i, custom_id=f"late-{i}") for i in range(4)])),
        purpose="batch",
    )
    late = client.batches.create(
        input_file_id=late_file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    async def past_its_window() -> None:
        async with gateway.state.engine.begin() as conn:
            await conn.execute(
                update(batches).where(batches.c.id == late.id).values(expires_at=time.time() - 1)
            )

    gateway.call(past_its_window())
    client.batches.cancel(busy.id)  # frees the slot: the late batch is picked up next
    done = wait_for_status(client, late.id, ("expired",), timeout_s=30)
    assert done.expired_at is not None and done.output_file_id is None
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 4)
    errors = _results(client, done.error_file_id)
    assert sorted(line["custom_id"] for line in errors) == [f"late-{i}" for i in range(4)]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    assert not any("late" in str(r.body) for r in fake_anthropic.received)
