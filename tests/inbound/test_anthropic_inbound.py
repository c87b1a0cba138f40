"""The official Anthropic SDK (sync and async) against Sluice's /v1/messages, relayed to a fake
OpenAI upstream: the SDK's typed models validate what Sluice answers, the fake records what the
upstream was asked, and usage rows show what was billed."""

from __future__ import annotations

from typing import cast

import httpx
import orjson
from anthropic import AsyncAnthropic
from anthropic.types import (
    ContentBlockParam,
    MessageParam,
    TextBlock,
    ThinkingBlock,
    ThinkingConfigParam,
    ToolUseBlock,
)

from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import UPSTREAM_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI, Scripted
from tests.inbound.conftest import HI, WEATHER_TOOL, ClaudeFactory, last_body
from tests.support import Gateway


def test_create_translates_request_and_response_and_bills(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    key = gateway.create_key("msgs", budget_micro=10_000_000)
    message = claude(gateway, key).messages.create(
        model="test-model",
        max_tokens=100,
        system="You are terse.",
        messages=HI,
        metadata={"user_id": "user-42"},
        extra_body={"temperature": 0.5, "top_k": 5},
        extra_headers={"anthropic-version": "2023-06-01"},
    )
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == "Hello from the fake upstream!"
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert message.model == "test-model"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == 11 and message.usage.output_tokens == 6
    assert message._request_id and message._request_id.startswith("req_")
    upstream = last_body(fake_openai)
    assert upstream["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"},
    ]
    assert upstream["max_tokens"] == 100 and upstream["temperature"] == 0.5
    assert upstream["user"] == "user-42"
    assert "top_k" not in upstream and "metadata" not in upstream and "system" not in upstream
    assert "stream" not in upstream
    assert fake_openai.received[-1].headers["Authorization"].startswith("Bearer sk-upstream")
    rows = gateway.usage_rows(key)
    assert len(rows) == 1
    # 11 prompt tokens at $1/M + 6 completion tokens at $2/M = 23 micro-dollars
    assert rows[0]["cost_micro"] == 23 and rows[0]["status"] == 200
    assert rows[0]["endpoint"] == "chat" and rows[0]["stream"] is False


def test_bearer_auth_and_system_blocks(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    key = gateway.create_key("bearer")
    client = claude(gateway, key, auth_token=key)  # sends Authorization: Bearer, no x-api-key
    client.messages.create(
        model="test-model",
        max_tokens=50,
        system=[
            {"type": "text", "text": "Rule one.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Rule two."},
        ],
        messages=HI,
    )
    assert last_body(fake_openai)["messages"][0] == {
        "role": "system",
        "content": "Rule one.\n\nRule two.",
    }


def test_stream_helper_gives_text_usage_and_final_message(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    key = gateway.create_key("stream", budget_micro=10_000_000)
    client = claude(gateway, key)
    with client.messages.stream(model="test-model", max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake upstream!"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 6 and final.usage.input_tokens == 11
    upstream = last_body(fake_openai)
    assert upstream["stream"] is True
    assert upstream["stream_options"] == {"include_usage": True}
    rows = gateway.usage_rows(key)
    assert rows[0]["stream"] is True and rows[0]["status"] == 200
    assert rows[0]["completion_tokens"] == 6 and rows[0]["cost_micro"] == 23


def test_raw_stream_event_sequence(gateway: Gateway, claude: ClaudeFactory) -> None:
    key = gateway.create_key("raw")
    client = claude(gateway, key)
    events = list(
        client.messages.create(model="test-model", max_tokens=100, messages=HI, stream=True)
    )
    types = [event.type for event in events]
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 6,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]
    assert start.type == "message_start"
    assert start.message.stop_reason is None and start.message.content == []
    assert start.message.usage.input_tokens > 0  # the local estimate, before upstream usage
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 6 and delta.usage.input_tokens == 11


def test_wire_has_named_sse_events(gateway: Gateway) -> None:
    key = gateway.create_key("wire")
    payload = {"model": "test-model", "max_tokens": 20, "messages": HI, "stream": True}
    with httpx.Client() as http:
        response = http.post(
            f"{gateway.url}/v1/messages",
            json=payload,
            headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    for block in blocks:
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        assert orjson.loads(data_line.removeprefix("data: "))["type"] == name
    assert blocks[-1].startswith("event: message_stop")


def test_tool_use_round_trip(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    key = gateway.create_key("tools", budget_micro=10_000_000)
    client = claude(gateway, key)
    question: MessageParam = {"role": "user", "content": "Weather in Paris?"}
    first = client.messages.create(
        model="test-model",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
        messages=[question],
    )
    assert first.stop_reason == "tool_use"
    block = first.content[0]
    assert isinstance(block, ToolUseBlock)
    assert block.name == "get_weather" and block.input == {"city": "Paris"}
    upstream = last_body(fake_openai)
    assert upstream["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "Weather for a city.",
            },
        }
    ]
    assert upstream["tool_choice"] == "required"

    dumped = [b.model_dump() for b in first.content]
    second = client.messages.create(
        model="test-model",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
        messages=[
            question,
            # model_dump() gives plain dicts (dict[str, Any]): the same blocks as params.
            {"role": "assistant", "content": cast(list[ContentBlockParam], dumped)},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": block.id, "content": "18C, sunny"},
                    {"type": "text", "text": "Thanks!"},
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    upstream = last_body(fake_openai)
    assert upstream["tool_choice"] == "none"
    assert upstream["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": block.id, "content": "18C, sunny"},
        {"role": "user", "content": "Thanks!"},
    ]
    assert len(gateway.usage_rows(key)) == 2


def test_tool_result_error_blocks_and_named_choice(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    key = gateway.create_key("tool-error")
    claude(gateway, key).messages.create(
        model="test-model",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "is_error": True,
                        "content": [{"type": "text", "text": "city is required"}],
                    }
                ],
            },
        ],
    )
    upstream = last_body(fake_openai)
    assert upstream["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert upstream["parallel_tool_calls"] is False
    assert upstream["messages"][1]["content"] == "Let me check."
    assert upstream["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert upstream["messages"][2] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": "Error: city is required",
    }


def test_streamed_tool_call(gateway: Gateway, claude: ClaudeFactory) -> None:
    key = gateway.create_key("stream-tools")
    client = claude(gateway, key)
    with client.messages.stream(
        model="test-model", max_tokens=100, tools=[WEATHER_TOOL], messages=HI
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    partial = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert "".join(partial) == '{"city": "Paris"}'
    assert final.stop_reason == "tool_use"
    (block,) = final.content
    assert isinstance(block, ToolUseBlock)
    assert block.id == "call_0" and block.input == {"city": "Paris"}
    assert final.usage.output_tokens == 7


def test_images_become_image_url_parts(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    key = gateway.create_key("vision")
    claude(gateway, key).messages.create(
        model="test-model",
        max_tokens=10,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
    )
    assert last_body(fake_openai)["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
        {"type": "text", "text": "What is this?"},
    ]


def test_max_tokens_and_stop_sequences(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    key = gateway.create_key("limits")
    client = claude(gateway, key)
    cut = client.messages.create(
        model="test-model", max_tokens=3, stop_sequences=["END", "STOP"], messages=HI
    )
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    assert isinstance(cut.content[0], TextBlock) and cut.content[0].text == "Hello from the"
    assert last_body(fake_openai)["stop"] == ["END", "STOP"]
    with client.messages.stream(model="test-model", max_tokens=2, messages=HI) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"


def test_matched_stop_sequence_is_reported(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    """vLLM-style upstreams name the stop string that matched; that becomes stop_sequence."""
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "one two"},
                "finish_reason": "stop",
                "stop_reason": "END",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }
    fake_openai.script.append(Scripted(body=orjson.dumps(completion)))
    key = gateway.create_key("stopseq")
    message = claude(gateway, key).messages.create(
        model="test-model", max_tokens=50, stop_sequences=["END"], messages=HI
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "END"


async def test_async_client_create_and_stream(gateway: Gateway) -> None:
    key = gateway.create_key("async", budget_micro=10_000_000)
    async with AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        message = await client.messages.create(model="test-model", max_tokens=100, messages=HI)
        assert message.stop_reason == "end_turn"
        async with client.messages.stream(
            model="test-model", max_tokens=100, tools=[WEATHER_TOOL], messages=HI
        ) as stream:
            final = await stream.get_final_message()
        assert isinstance(final.content[0], ToolUseBlock)
        assert final.content[0].input == {"city": "Paris"}
        streamed = await client.messages.create(
            model="test-model", max_tokens=100, messages=HI, stream=True
        )
        kinds = [event.type async for event in streamed]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


def test_beta_endpoints_used_by_coding_agents(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    """Claude Code calls the beta flavour: ``?beta=true`` and an ``anthropic-beta`` header."""
    key = gateway.create_key("beta")
    client = claude(gateway, key)
    betas = ["interleaved-thinking-2025-05-14"]
    message = client.beta.messages.create(
        model="test-model",
        max_tokens=100,
        betas=betas,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}],
    )
    assert message.stop_reason == "tool_use" and message.content[0].type == "tool_use"
    assert fake_openai.received[-1].path == "/v1/chat/completions"
    counted = client.beta.messages.count_tokens(
        model="test-model", betas=betas, messages=[{"role": "user", "content": "hi"}]
    )
    assert counted.input_tokens > 0


def test_thinking_blocks_from_upstream_reasoning(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    completion = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
    }
    fake_openai.script.append(Scripted(body=orjson.dumps(completion)))
    key = gateway.create_key("thinking")
    message = claude(gateway, key).messages.create(
        model="test-model",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HI,
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert isinstance(message.content[0], ThinkingBlock)
    assert message.content[0].thinking == "2+2"
    assert "thinking" not in last_body(fake_openai)  # no OpenAI meaning: not forwarded


def test_thinking_reaches_anthropic_channels_exactly_as_sent(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, claude: ClaudeFactory
) -> None:
    """Anthropic in front, Anthropic behind: the client's ``thinking`` is forwarded unchanged
    (it never enters the OpenAI body, so OpenAI channels do not see it: test above)."""
    channel = {"name": "claude", "type": "anthropic", "base_url": fake_anthropic.base_url,
               "api_key": ANTHROPIC_KEY, "models": ["test-claude"]}  # fmt: skip
    gateway = gateway_factory([channel])
    thinking: ThinkingConfigParam = {"type": "enabled", "budget_tokens": 1024}
    message = claude(gateway, gateway.create_key("native-thinking")).messages.create(
        model="test-claude",
        max_tokens=2048,
        thinking=thinking,
        messages=HI,
        extra_body={"temperature": 0.5},  # this SDK version no longer types it
    )
    assert message.content
    sent = fake_anthropic.received[-1].body
    assert sent["thinking"] == thinking
    assert "temperature" not in sent  # Anthropic refuses a modified temperature with thinking
