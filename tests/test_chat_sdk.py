"""The official OpenAI SDK (sync and async) against Sluice relaying to a fake OpenAI upstream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import Gateway

SdkFactory = Callable[..., Any]


def test_chat_non_streaming_is_relayed_and_billed(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = gateway.create_key("chat", budget_micro=10_000_000)
    client = sdk(gateway, key)
    reply = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from the fake upstream!"
    assert reply.usage is not None and reply.usage.prompt_tokens == 11
    rows = gateway.usage_rows(key)
    assert len(rows) == 1
    # 11 prompt tokens at $1/M + 6 completion tokens at $2/M = 23 micro-dollars
    assert rows[0]["cost_micro"] == 23
    assert rows[0]["status"] == 200 and rows[0]["stream"] is False
    assert fake_openai.received[0].headers["Authorization"].startswith("Bearer sk-upstream")


def test_chat_streaming_strips_forced_usage_chunk(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = gateway.create_key("stream", budget_micro=10_000_000)
    client = sdk(gateway, key)
    chunks = list(
        client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream!"
    assert all(c.usage is None for c in chunks), "client did not ask for usage"
    assert fake_openai.received[0].body["stream_options"] == {"include_usage": True}
    rows = gateway.usage_rows(key)
    assert rows[0]["completion_tokens"] == 6 and rows[0]["cost_micro"] == 23


async def test_async_client_streams_with_usage_when_asked(gateway: Gateway) -> None:
    key = gateway.create_key("async", budget_micro=10_000_000)
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    stream = await client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    await client.close()


def test_unknown_key_is_rejected_with_openai_error(gateway: Gateway, sdk: SdkFactory) -> None:
    client = sdk(gateway, "sk-not-a-real-key-123")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
