"""The Batch API through the official ``openai`` SDK, run by Sluice over an Anthropic channel."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from openai import OpenAI

from tests.batches.conftest import (
    MODEL,
    chat_line,
    claude_channel,
    expected_cost,
    fast_batches,
    jsonl,
    upstream_calls_by_line,
    wait_for_status,
    words_for,
)
from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import REPLY_WORDS
from tests.openapi_schema import validate_openai
from tests.support import Gateway

LINES = 1000


def _parse(content: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in content.splitlines() if line.strip()]


def test_a_thousand_line_chat_batch_through_an_anthropic_channel(
    batch_gateway: Gateway, fake_anthropic: FakeAnthropic, sdk: Any
) -> None:
    key = batch_gateway.create_key("batcher", budget_micro=1_000_000)
    client: OpenAI = sdk(batch_gateway, key)
    data = jsonl([chat_line(i) for i in range(LINES)])

    uploaded = client.files.create(file=("input.jsonl", data), purpose="batch")
    validate_openai("OpenAIFile", uploaded.model_dump(exclude_unset=True))
    assert (uploaded.bytes, uploaded.purpose, uploaded.filename) == (
        len(data),
        "batch",
        "input.jsonl",
    )
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).content == data  # streamed back unchanged

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    validate_openai("Batch", batch.model_dump(exclude_unset=True))
    assert batch.status in ("validating", "in_progress")
    done = wait_for_status(client, batch.id, ("completed", "failed", "cancelled", "expired"))
    validate_openai("Batch", done.model_dump(exclude_unset=True))
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (LINES, LINES)
    assert done.request_counts.failed == 0 and done.error_file_id is None
    assert done.metadata == {"job": "nightly"}
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.output_file_id is not None

    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output"
    lines = _parse(client.files.content(done.output_file_id).content)
    assert len(lines) == LINES
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == LINES
    for index in range(LINES):
        line = by_id[f"req-{index}"]
        assert line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200
        assert response["request_id"] == f"{batch.id}:{index + 1}"
        body = response["body"]
        validate_openai("CreateChatCompletionResponse", body)
        assert body["model"] == MODEL
        words = words_for(index)
        assert body["choices"][0]["message"]["content"] == "".join(REPLY_WORDS[:words])
        assert body["usage"]["completion_tokens"] == words

    # Each line reached the upstream exactly once.
    calls = upstream_calls_by_line(fake_anthropic)
    assert calls == {f"line {i}": 1 for i in range(LINES)}

    # Budget exact: the usage rows, the key's spent and the discounted price agree.
    rows = [r for r in batch_gateway.usage_rows(key) if r["request_id"].startswith(batch.id)]
    assert len(rows) == LINES
    expected = sum(expected_cost(i) for i in range(LINES))
    assert sum(r["cost_micro"] for r in rows) == expected
    record = batch_gateway.key_record(key)
    assert record.spent_micro == expected
    for row in rows:
        index = int(row["request_id"].rsplit(":", 1)[1]) - 1
        assert row["cost_micro"] == expected_cost(index)
        assert (row["status"], row["channel"]) == (200, "claude")

    listed = client.batches.list(limit=10)
    assert [b.id for b in listed.data] == [batch.id]
    page = client.files.list(purpose="batch_output")
    assert [f.id for f in page.data] == [done.output_file_id]


def test_cancellation_stops_within_seconds_and_bills_only_what_ran(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, sdk: Any
) -> None:
    gateway = gateway_factory(
        [claude_channel(fake_anthropic)],
        batches=fast_batches(concurrency=2, lines_per_second=20),
    )
    key = gateway.create_key("canceller")
    client: OpenAI = sdk(gateway, key)
    uploaded = client.files.create(
        file=("in.jsonl", jsonl([chat_line(i) for i in range(400)])), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for_status(client, batch.id, ("in_progress",))
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.id).request_counts.completed < 10:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = client.batches.cancel(batch.id)
    asked = time.monotonic()
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_for_status(client, batch.id, ("cancelled",), timeout_s=10)
    assert time.monotonic() - asked < 5, "the batch took more than 5 s to stop"
    validate_openai("Batch", done.model_dump(exclude_unset=True))
    assert done.cancelled_at and done.cancelling_at
    counts = done.request_counts
    assert counts is not None and 10 <= counts.completed < 400
    calls_then = len(fake_anthropic.received)
    time.sleep(1.0)
    assert len(fake_anthropic.received) == calls_then, "lines still ran after cancellation"

    assert done.output_file_id is not None
    ran = _parse(client.files.content(done.output_file_id).content)
    failed = _parse(client.files.content(done.error_file_id).content) if done.error_file_id else []
    assert len(ran) == counts.completed and len(failed) == counts.failed
    # Every line that reached the upstream is in the output (or the errors, if cut mid-line),
    # and only those were billed, at the batch discount.
    calls = upstream_calls_by_line(fake_anthropic)
    assert set(calls.values()) == {1}
    assert {f"line {int(line['custom_id'][4:])}" for line in ran} <= set(calls)
    assert len(calls) == counts.completed + counts.failed
    rows = [r for r in gateway.usage_rows(key) if r["request_id"].startswith(batch.id)]
    billed = {int(r["request_id"].rsplit(":", 1)[1]) - 1 for r in rows if r["cost_micro"]}
    assert billed == {int(line["custom_id"][4:]) for line in ran}
    expected = sum(expected_cost(i) for i in billed)
    assert sum(r["cost_micro"] for r in rows) == expected == gateway.key_record(key).spent_micro


def test_files_and_batches_are_visible_only_to_their_key(batch_gateway: Gateway, sdk: Any) -> None:
    owner = batch_gateway.create_key("owner")
    other = batch_gateway.create_key("other")
    client: OpenAI = sdk(batch_gateway, owner)
    uploaded = client.files.create(file=("a.jsonl", jsonl([chat_line(0)])), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    headers = {"authorization": f"Bearer {other}"}
    base = batch_gateway.base_url
    for method, path in (
        ("GET", f"/files/{uploaded.id}"),
        ("GET", f"/files/{uploaded.id}/content"),
        ("DELETE", f"/files/{uploaded.id}"),
        ("GET", f"/batches/{batch.id}"),
        ("POST", f"/batches/{batch.id}/cancel"),
    ):
        response = httpx.request(method, base + path, headers=headers)
        assert response.status_code == 404, (method, path, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    # Nor can it run a batch over the owner's file, or see either in its lists.
    response = httpx.post(
        f"{base}/batches", headers=headers,
        json={"input_file_id": uploaded.id, "endpoint": "/v1/chat/completions",
              "completion_window": "24h"},
    )  # fmt: skip
    assert response.status_code == 404
    assert httpx.get(f"{base}/files", headers=headers).json()["data"] == []
    assert httpx.get(f"{base}/batches", headers=headers).json()["data"] == []
    # The owner still has both, and may delete its file.
    wait_for_status(client, batch.id, ("completed",))
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    response = httpx.get(
        f"{base}/files/{uploaded.id}", headers={"authorization": f"Bearer {owner}"}
    )
    assert response.status_code == 404


def test_the_internal_key_cannot_be_sent_from_outside(batch_gateway: Gateway) -> None:
    """Batch lines authenticate through an ASGI scope key; a header of that name is just a
    header, and a request without an API key is refused as ever."""
    key = batch_gateway.create_key("victim")
    record = batch_gateway.key_record(key)
    response = httpx.post(
        f"{batch_gateway.base_url}/chat/completions",
        headers={"sluice.internal_key": record.id, "sluice.price_ppm": "0"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
