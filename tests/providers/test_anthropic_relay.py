"""Anthropic channels end to end: OpenAI SDK -> Sluice -> fake Anthropic API on loopback.

The shared behaviour (text, tools, streams, errors) is in tests/conformance; these are the
Anthropic-specific paths: overload and failover, prompt-cache billing, mid-stream error events,
JSON mode, reasoning, unsupported endpoints and parameters, and key hygiene in logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

from tests.fakes.anthropic_upstream import UPSTREAM_KEY, FakeAnthropic, error_body
from tests.fakes.openai_upstream import Scripted
from tests.openapi_schema import validate_openai
from tests.support import Gateway

SdkFactory = Callable[..., openai.OpenAI]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def claude(fake: FakeAnthropic, name: str = "claude", **overrides: Any) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "name": name,
        "type": "anthropic",
        "base_url": fake.base_url,
        "api_key": UPSTREAM_KEY,
        "models": ["test-claude", "claude-sonnet-4-5"],
    }
    channel.update(overrides)
    return channel


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway], fake_anthropic: FakeAnthropic) -> Gateway:
    return gateway_factory([claude(fake_anthropic)])


def test_overloaded_is_503_and_fails_over(
    gateway_factory: Callable[..., Gateway], fake_anthropic: FakeAnthropic, sdk: SdkFactory
) -> None:
    overloaded = error_body("overloaded_error", "Overloaded")
    fake_anthropic.script.append(Scripted(status=529, body=overloaded))
    single = gateway_factory([claude(fake_anthropic)])
    client = sdk(single, single.create_key())
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="test-claude", messages=USER)
    assert caught.value.status_code == 503 and caught.value.code == "upstream_overloaded"
    # Two channels: the overloaded one is retried elsewhere, before any byte reaches the client.
    fake_anthropic.script.append(Scripted(status=529, body=overloaded))
    pair = gateway_factory([claude(fake_anthropic, "a"), claude(fake_anthropic, "b")])
    client = sdk(pair, pair.create_key())
    reply = client.chat.completions.create(model="test-claude", messages=USER)
    assert reply.choices[0].message.content == "Hello from the fake upstream!"


def test_prompt_cache_usage_is_reported_and_billed(
    gateway_factory: Callable[..., Gateway], fake_anthropic: FakeAnthropic, sdk: SdkFactory
) -> None:
    gateway = gateway_factory([claude(fake_anthropic, headers={"x-fake-cache": "1"})])
    key = gateway.create_key(budget_micro=10_000_000)
    reply = sdk(gateway, key).chat.completions.create(model="claude-sonnet-4-5", messages=USER)
    usage = reply.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (11, 6)  # 3 + 6 read + 2 written
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 6
    row = gateway.usage_rows(key)[0]
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (11, 6, 6)
    # claude-sonnet-4-5: $3/M input, $0.30/M cache read, $3.75/M cache write, $15/M output.
    assert row["cost_micro"] == round(3 * 3 + 6 * 0.3 + 2 * 3.75 + 6 * 15)


def test_stream_error_event_before_output_fails_over(
    gateway_factory: Callable[..., Gateway], fake_anthropic: FakeAnthropic, sdk: SdkFactory
) -> None:
    failing = claude(fake_anthropic, "failing", priority=1, headers={"x-fake-stream-error": "1"})
    gateway = gateway_factory([failing, claude(fake_anthropic, "healthy")])
    key = gateway.create_key()
    chunks = list(
        sdk(gateway, key).chat.completions.create(model="test-claude", messages=USER, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
        "Hello from the fake upstream!"
    )
    assert len(fake_anthropic.received) == 2  # the overloaded channel, then the healthy one
    row = gateway.usage_rows(key)[0]
    assert (row["status"], row["channel"]) == (200, "healthy")


def test_stream_error_event_after_output_reaches_client(
    gateway_factory: Callable[..., Gateway], fake_anthropic: FakeAnthropic, sdk: SdkFactory
) -> None:
    gateway = gateway_factory([claude(fake_anthropic, headers={"x-fake-stream-error": "late"})])
    key = gateway.create_key()
    client = sdk(gateway, key)
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(
            model="test-claude", messages=USER, stream=True
        ):
            received.append(chunk)
    assert "Overloaded" in str(caught.value.message)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "Hello from"
    row = gateway.usage_rows(key)[0]
    assert row["status"] == 503 and row["completion_tokens"] > 0  # delivered text is billed


def test_json_mode_whole_and_streamed(gateway: Gateway, sdk: SdkFactory) -> None:
    client = sdk(gateway, gateway.create_key())
    schema: dict[str, object] = {"type": "object", "properties": {"city": {"type": "string"}}}
    fmt: ResponseFormat = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema},
    }
    reply = client.chat.completions.create(model="test-claude", messages=USER, response_format=fmt)
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "stop" and not reply.choices[0].message.tool_calls
    chunks = list(
        client.chat.completions.create(
            model="test-claude", messages=USER, response_format={"type": "json_object"}, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"city": "Paris"}


def test_reasoning_effort_returns_reasoning_content(
    gateway: Gateway, fake_anthropic: FakeAnthropic, sdk: SdkFactory
) -> None:
    client = sdk(gateway, gateway.create_key())
    raw = client.chat.completions.with_raw_response.create(
        model="test-claude", messages=USER, reasoning_effort="low", max_tokens=3000
    )
    body = raw.http_response.json()
    validate_openai("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["reasoning_content"] == "Let me think."
    assert fake_anthropic.received[-1].body["thinking"] == {
        "type": "enabled",
        "budget_tokens": 1024,
    }
    chunks = list(
        client.chat.completions.create(
            model="test-claude", messages=USER, reasoning_effort="low", max_tokens=3000, stream=True
        )
    )
    dumped: list[dict[str, Any]] = [c.to_dict() for c in chunks[:-1]]
    reasoning = [d["choices"][0]["delta"].get("reasoning_content") for d in dumped]
    assert "Let me think." in reasoning


def test_unsupported_endpoint_and_parameter_are_400(
    gateway: Gateway, fake_anthropic: FakeAnthropic, sdk: SdkFactory
) -> None:
    client = sdk(gateway, gateway.create_key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="test-claude", input="hi")
    assert caught.value.code == "unsupported_endpoint"
    assert "test-claude" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="test-claude", messages=USER, n=2)
    assert caught.value.param == "n"
    assert fake_anthropic.received == []


def test_upstream_key_never_logged_or_returned(
    gateway: Gateway,
    fake_anthropic: FakeAnthropic,
    sdk: SdkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_anthropic.script.append(
        Scripted(status=401, body=error_body("authentication_error", f"bad key {UPSTREAM_KEY}"))
    )
    client = sdk(gateway, gateway.create_key())
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="test-claude", messages=USER)
    assert caught.value.status_code == 502
    assert UPSTREAM_KEY not in caught.value.response.text
    assert UPSTREAM_KEY not in caplog.text
    assert fake_anthropic.received[-1].headers["x-api-key"] == UPSTREAM_KEY
