"""Batch input files are validated line by line at upload, with OpenAI-shaped errors naming the
line; batches refuse files that do not fit them; lines refused for budget fail with the 429."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI
from starlette.formparsers import MultiPartException

from tests.batches.conftest import (
    chat_line,
    claude_channel,
    expected_cost,
    fast_batches,
    jsonl,
    wait_for_status,
)
from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.support import Gateway


def _upload(gateway: Gateway, key: str, content: bytes, purpose: str = "batch") -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/files",
        headers={"authorization": f"Bearer {key}"},
        files={"file": ("in.jsonl", content, "application/jsonl")},
        data={"purpose": purpose},
    )


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


GOOD = orjson.dumps(chat_line(0)).decode()


def _with(line: int, broken: str, total: int = 3) -> bytes:
    lines = [orjson.dumps(chat_line(i)).decode() for i in range(total)]
    lines[line - 1] = broken
    return ("\n".join(lines) + "\n").encode()


def _line(**changes: Any) -> str:
    item: dict[str, Any] = chat_line(9, custom_id="x")
    for name, value in changes.items():
        if value is None:
            item.pop(name)
        else:
            item[name] = value
    return orjson.dumps(item).decode()


@pytest.mark.parametrize(
    ("content", "line", "code"),
    [
        (_with(2, "{not json"), 2, "invalid_json_line"),
        (_with(3, "[1, 2]"), 3, "invalid_json_line"),
        (_with(2, ""), 2, "invalid_json_line"),
        (_with(2, _line(custom_id=None)), 2, "missing_custom_id"),
        (_with(3, orjson.dumps(chat_line(0)).decode()), 3, "duplicate_custom_id"),
        (_with(1, _line(method="GET")), 1, "invalid_method"),
        (_with(2, _line(url="/v1/images/generations")), 2, "invalid_url"),
        (_with(2, _line(body="text")), 2, "invalid_body"),
        (_with(2, _line(body={"messages": []})), 2, "missing_model"),
        (_with(3, _line(body={"model": "test-claude", "stream": True})), 3, "invalid_body"),
        (_with(2, orjson.dumps(chat_line(7, model="not-served")).decode()), 2, "model_not_found"),
        (_with(2, _line(extra=1)), 2, "unknown_parameter"),
    ],
)
def test_a_bad_line_is_named_in_an_openai_error(
    batch_gateway: Gateway, content: bytes, line: int, code: str
) -> None:
    key = batch_gateway.create_key("v")
    response = _upload(batch_gateway, key, content)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["code"] == code and error["param"] == "file"
    assert error["message"].startswith(f"Line {line}: "), error["message"]
    # Nothing was kept.
    assert (
        httpx.get(
            f"{batch_gateway.base_url}/files", headers={"authorization": f"Bearer {key}"}
        ).json()["data"]
        == []
    )


def test_a_model_the_key_may_not_use_is_refused_by_line(batch_gateway: Gateway) -> None:
    key = batch_gateway.create_key("narrow", allowed_models=["other-*"])
    error = _error(_upload(batch_gateway, key, jsonl([chat_line(0)])))
    assert error["code"] == "model_not_allowed" and error["message"].startswith("Line 1: ")


def test_uploads_refuse_other_purposes_empty_files_and_non_multipart(
    batch_gateway: Gateway, sdk: Any
) -> None:
    key = batch_gateway.create_key("v")
    assert _error(_upload(batch_gateway, key, jsonl([chat_line(0)]), "fine-tune"))["param"] == (
        "purpose"
    )
    assert _error(_upload(batch_gateway, key, b""))["code"] == "empty_file"
    response = httpx.post(
        f"{batch_gateway.base_url}/files", headers={"authorization": f"Bearer {key}"}, json={}
    )
    assert response.status_code == 415 and _error(response)
    client: OpenAI = sdk(batch_gateway, key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("bad.jsonl", b"{oops}\n"), purpose="batch")
    assert "Line 1" in str(caught.value)


def test_files_over_the_size_limit_are_refused(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    gateway = gateway_factory(
        [claude_channel(fake_anthropic)], files={"max_bytes": 4096}, batches=fast_batches()
    )
    key = gateway.create_key("big")
    small = jsonl([chat_line(i) for i in range(5)])
    assert _upload(gateway, key, small).status_code == 200
    just_over = jsonl([chat_line(i) for i in range(40)])  # within the framing allowance
    far_over = just_over * 200  # refused on its declared length, before it is read
    assert 4096 < len(just_over) < 4096 + 64 * 1024 < len(far_over)
    for content in (just_over, far_over):
        response = _upload(gateway, key, content)
        assert response.status_code == 413, response.text
        assert _error(response)["code"] == "request_too_large"


def test_a_batch_refuses_a_file_whose_lines_use_another_endpoint(
    batch_gateway: Gateway, sdk: Any
) -> None:
    key = batch_gateway.create_key("v")
    client: OpenAI = sdk(batch_gateway, key)
    uploaded = client.files.create(file=("in.jsonl", jsonl([chat_line(0)])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    assert caught.value.code == "mismatched_endpoint"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    response = httpx.post(
        f"{batch_gateway.base_url}/batches",
        headers={"authorization": f"Bearer {key}"},
        json={"input_file_id": uploaded.id, "endpoint": "/v1/chat/completions",
              "completion_window": "48h"},
    )  # fmt: skip
    assert response.status_code == 400 and _error(response)["param"] == "completion_window"


def test_lines_refused_for_budget_fail_with_the_429(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, sdk: Any
) -> None:
    gateway = gateway_factory([claude_channel(fake_anthropic)], batches=fast_batches(concurrency=1))
    budget = 150  # micro-dollars: a few discounted lines' worth
    key = gateway.create_key("tight", budget_micro=budget)
    client: OpenAI = sdk(gateway, key)
    uploaded = client.files.create(
        file=("in.jsonl", jsonl([chat_line(i) for i in range(40)])), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for_status(client, batch.id, ("completed",), timeout_s=60)
    counts = done.request_counts
    assert counts is not None and counts.completed > 0 and counts.failed > 0
    assert counts.completed + counts.failed == 40
    assert done.error_file_id is not None and done.output_file_id is not None
    errors = [
        orjson.loads(x) for x in client.files.content(done.error_file_id).content.splitlines()
    ]
    for line in errors:
        assert line["response"]["status_code"] == 429
        assert line["response"]["body"]["error"]["type"] == "insufficient_quota"
    ran = [orjson.loads(x) for x in client.files.content(done.output_file_id).content.splitlines()]
    expected = sum(expected_cost(int(line["custom_id"][4:])) for line in ran)
    spent = gateway.key_record(key).spent_micro
    rows = [r for r in gateway.usage_rows(key) if r["request_id"].startswith(batch.id)]
    assert spent == expected == sum(r["cost_micro"] for r in rows) and spent <= budget


def test_an_upload_without_a_declared_length_is_cut_off_at_the_limit(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    """A chunked body declares no length: the limit is applied to the bytes as they arrive."""
    gateway = gateway_factory(
        [claude_channel(fake_anthropic)], files={"max_bytes": 4096}, batches=fast_batches()
    )
    key = gateway.create_key("chunked")
    boundary = "sluiceboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    line = orjson.dumps(chat_line(0)) + b"\n"

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(10_000):  # ~2 MB if it were all read
            yield line
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(
        f"{gateway.base_url}/files",
        headers={"authorization": f"Bearer {key}",
                 "content-type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
    )  # fmt: skip
    assert response.status_code == 413, response.text
    assert _error(response)["code"] == "request_too_large"


async def test_the_upload_cap_refuses_the_first_chunk_past_the_limit() -> None:
    from sluice.files.routes import capped_chunks

    delivered = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal delivered
        for _ in range(10):
            delivered += 1
            yield b"x" * 100

    received: list[bytes] = []
    with pytest.raises(MultiPartException, match="limit of 250 bytes"):
        async for chunk in capped_chunks(chunks(), 250):
            received.append(chunk)
    assert received == [b"x" * 100] * 2 and delivered == 3  # 300 bytes: refused, not read on
