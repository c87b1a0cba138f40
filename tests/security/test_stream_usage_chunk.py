"""The usage chunk a client asked for (``stream_options.include_usage``) always comes.

Upstreams that send no usage chunk (llama.cpp's server, the embedded ``local`` channel, some
relays, an Anthropic-compatible server without ``message_delta`` usage, a Gemini proxy that
drops ``usageMetadata``) used to end the stream without one. The relay now adds it, with the
counts it bills, as OpenAI sends it: ``choices: []``, the stream's own id, model and created,
just before ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripted_sse_upstream import ScriptedSse
from tests.openapi_schema import validate_openai
from tests.security.stream_scripts import MODEL, channel, script
from tests.support import Gateway, LoopThread

CHAT_CHUNK = "CreateChatCompletionStreamResponse"
HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def upstream(loop_thread: LoopThread) -> Iterator[ScriptedSse]:
    fake = loop_thread.run(ScriptedSse().start())
    yield fake
    loop_thread.run(fake.stop())


def _events(gateway: Gateway, key: str, path: str, payload: dict[str, Any]) -> list[Any]:
    response = httpx.post(
        f"{gateway.base_url}/{path}",
        json=payload,
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    blocks = [b[6:] for b in response.text.split("\n\n") if b.startswith("data: ")]
    return [b if b == "[DONE]" else orjson.loads(b) for b in blocks]


def _billed(gateway: Gateway, key: str) -> dict[str, int]:
    rows = gateway.usage_rows(key)
    assert len(rows) == 1 and rows[0]["status"] == 200
    prompt, completion = rows[0]["prompt_tokens"], rows[0]["completion_tokens"]
    assert completion > 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def test_sdk_gets_the_usage_chunk_from_an_upstream_that_sends_none(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, sdk: Any
) -> None:
    fake_openai.send_stream_usage = False
    gateway = gateway_factory([openai_channel(fake_openai)])
    key = gateway.create_key("usage", budget_micro=10_000_000)
    client = sdk(gateway, key)
    chunks = list(
        client.chat.completions.create(
            model="test-model", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert (last.id, last.model, last.created) == (chunks[0].id, chunks[0].model, chunks[0].created)
    billed = _billed(gateway, key)
    assert last.usage.model_dump(exclude_none=True) == billed
    validate_openai(CHAT_CHUNK, last.to_dict())


@pytest.mark.parametrize("provider", ["openai", "azure", "anthropic", "gemini"])
def test_raw_stream_ends_with_a_spec_valid_usage_chunk_before_done(
    gateway_factory: GatewayFactory, upstream: ScriptedSse, provider: str
) -> None:
    upstream.script = script(provider, usage=False, hold_s=0)
    gateway = gateway_factory([channel(provider, upstream.url)])
    key = gateway.create_key("usage", budget_micro=10_000_000)
    payload = {"model": MODEL, "messages": HI, "stream": True,
               "stream_options": {"include_usage": True}}  # fmt: skip
    events = _events(gateway, key, "chat/completions", payload)
    assert events[-1] == "[DONE]"
    usage_chunk, first = events[-2], events[0]
    for event in events[:-1]:
        validate_openai(CHAT_CHUNK, event)
    assert usage_chunk["choices"] == []
    assert [e for e in events[:-2] if e.get("usage")] == []
    for name in ("id", "object", "created", "model"):
        assert usage_chunk[name] == first[name]
    assert usage_chunk["usage"] == _billed(gateway, key)


def test_legacy_completions_stream_gets_its_usage_chunk(
    gateway_factory: GatewayFactory, upstream: ScriptedSse
) -> None:
    def chunk(text: str, finish: str | None = None) -> bytes:
        body = {"id": "cmpl-x", "object": "text_completion", "created": 7, "model": MODEL,
                "choices": [{"text": text, "index": 0, "logprobs": None,
                             "finish_reason": finish}]}  # fmt: skip
        return b"data: " + orjson.dumps(body) + b"\n\n"

    upstream.script = [(0.0, chunk("Hel")), (0.0, chunk("lo", "stop")), (0.0, b"data: [DONE]\n\n")]
    gateway = gateway_factory([channel("openai", upstream.url)])
    key = gateway.create_key("usage", budget_micro=10_000_000)
    payload = {"model": MODEL, "prompt": "say hello", "stream": True,
               "stream_options": {"include_usage": True}}  # fmt: skip
    events = _events(gateway, key, "completions", payload)
    usage_chunk = events[-2]
    assert usage_chunk["object"] == "text_completion" and usage_chunk["id"] == "cmpl-x"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == _billed(gateway, key)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_no_usage_chunk_when_the_client_did_not_ask(
    gateway_factory: GatewayFactory, upstream: ScriptedSse, provider: str
) -> None:
    upstream.script = script(provider, usage=False, hold_s=0)
    gateway = gateway_factory([channel(provider, upstream.url)])
    key = gateway.create_key("usage", budget_micro=10_000_000)
    events = _events(gateway, key, "chat/completions",
                     {"model": MODEL, "messages": HI, "stream": True})  # fmt: skip
    assert events[-1] == "[DONE]"
    assert [e for e in events[:-1] if "usage" in e and e["usage"]] == []


@pytest.mark.parametrize("provider", ["openai", "azure", "anthropic", "gemini"])
def test_an_upstream_usage_chunk_is_not_doubled(
    gateway_factory: GatewayFactory, upstream: ScriptedSse, provider: str
) -> None:
    upstream.script = script(provider, usage=True, hold_s=0)
    gateway = gateway_factory([channel(provider, upstream.url)])
    key = gateway.create_key("usage", budget_micro=10_000_000)
    payload = {"model": MODEL, "messages": HI, "stream": True,
               "stream_options": {"include_usage": True}}  # fmt: skip
    events = _events(gateway, key, "chat/completions", payload)
    with_usage = [e for e in events[:-1] if e.get("usage")]
    assert len(with_usage) == 1 and with_usage[0] is events[-2]
    assert with_usage[0]["usage"]["prompt_tokens"] == 5000
