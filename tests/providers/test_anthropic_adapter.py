"""The Anthropic adapter as pure functions: request mapping, responses, stream events, errors.

Translated requests are checked with the same validator the fake upstream uses (the official
``anthropic`` SDK's typed params), so a mapping that Anthropic would reject fails here too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from sluice.core import RelayCall, UsageTokens
from sluice.errors import InvalidRequest, UpstreamBadResponse
from sluice.providers.anthropic import AnthropicAdapter
from sluice.providers.configs import AnthropicConfig, OpenAIConfig
from sluice.providers.openai import OpenAIAdapter
from sluice.settings import Secret
from tests.fakes.anthropic_upstream import check_messages_request

ADAPTER = AnthropicAdapter()
CHANNEL = AnthropicConfig(
    name="claude",
    base_url="https://api.example.test/",
    api_key=Secret("sk-ant-x" * 3),
)


def make_call(stream: bool = False, wants_usage: bool = False, **body: Any) -> RelayCall:
    body.setdefault("model", "claude-x")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return RelayCall(
        endpoint="chat",
        path="/chat/completions",
        body=body,
        raw_body=orjson.dumps(body),
        requested_model=body["model"],
        upstream_model=body["model"],
        stream=stream,
        client_wants_usage=wants_usage,
    )


def translate(**body: Any) -> dict[str, Any]:
    request = ADAPTER.build_request(make_call(**body), CHANNEL)
    payload: dict[str, Any] = orjson.loads(request.body)
    check_messages_request(payload)
    return payload


def test_request_addressing_and_headers() -> None:
    request = ADAPTER.build_request(make_call(), CHANNEL)
    assert request.url == "https://api.example.test/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-x" * 3
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert orjson.loads(request.body)["max_tokens"] == 4096  # defaulted: Anthropic requires it


def test_sampling_stop_user_and_dropped_fields() -> None:
    body = translate(
        temperature=1.7,
        top_p=0.5,
        top_k=40,
        stop="END",
        user="u-1",
        max_completion_tokens=77,
        seed=3,
        logprobs=False,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        store=True,
    )
    assert body["temperature"] == 1.0  # clamped into Anthropic's 0..1
    assert body["top_p"] == 0.5 and body["top_k"] == 40
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["max_tokens"] == 77
    for dropped in ("seed", "logprobs", "presence_penalty", "frequency_penalty", "store", "user"):
        assert dropped not in body


def test_system_parts_and_merging() -> None:
    body = translate(
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            },
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three  "},
        ]
    )
    assert body["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert [b["text"] for b in body["messages"][0]["content"]] == ["one", "two"]
    assert body["messages"][1]["content"] == [{"type": "text", "text": "three"}]  # prefill trimmed


def test_tools_choice_and_parallel() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "d",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    body = translate(tools=[tool], tool_choice="required", parallel_tool_calls=False)
    assert body["tools"] == [
        {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert "tool_choice" not in translate(tools=[tool])  # Anthropic defaults to auto
    assert translate(tools=[tool], tool_choice="none")["tool_choice"] == {"type": "none"}
    assert translate(tools=[tool], parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }


def test_tool_history_becomes_tool_use_and_results() -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    body = translate(
        tools=[tool],
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"},
            {"role": "user", "content": "and?"},
        ],
    )
    assistant, results = body["messages"][1], body["messages"][2]
    assert assistant["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}
    ]
    assert results["role"] == "user"
    assert results["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "call_1",
        "content": "done",
    }
    assert results["content"][1] == {"type": "text", "text": "and?"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"functions": [{"name": "f"}]}, "functions"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/bmp;base64,AAAA"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,**"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{not json"},
                            }
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "system", "content": "only system"}]}, "messages"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"reasoning_effort": "high", "max_tokens": 500}, "max_tokens"),
    ],
)
def test_unsupported_requests_are_clear_400s(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        ADAPTER.build_request(make_call(**body), CHANNEL)
    assert caught.value.http_status == 400
    assert caught.value.param == param


def test_remote_image_url_falls_back_to_url_source() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}}
    body = translate(messages=[{"role": "user", "content": [image]}])
    assert body["messages"][0]["content"][0]["source"] == {
        "type": "url",
        "url": "https://img.example/cat.png",
    }


def test_reasoning_effort_and_thinking_passthrough() -> None:
    body = translate(reasoning_effort="medium", max_tokens=8000, temperature=0.2)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "temperature" not in body  # Anthropic rejects it together with thinking
    body = translate(reasoning_effort="high", max_tokens=2000)
    assert body["thinking"]["budget_tokens"] == 1999  # must stay below max_tokens
    body = translate(thinking={"type": "enabled", "budget_tokens": 2048}, max_tokens=4000)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_native_thinking_travels_as_an_anthropic_extension() -> None:
    """``thinking`` from a client of ``/v1/messages`` is not in the OpenAI body: it reaches an
    Anthropic channel through ``RelayCall.extensions``; an OpenAI channel never sees it."""
    thinking = {"type": "enabled", "budget_tokens": 2048}
    call = replace(make_call(max_tokens=4000), extensions={"anthropic": {"thinking": thinking}})
    payload = orjson.loads(ADAPTER.build_request(call, CHANNEL).body)
    check_messages_request(payload)
    assert payload["thinking"] == thinking
    other = replace(make_call(max_tokens=4000), extensions={"gemini": {"thinking": thinking}})
    assert "thinking" not in orjson.loads(ADAPTER.build_request(other, CHANNEL).body)
    openai = OpenAIAdapter(reasoning_rules=True)
    openai_channel = OpenAIConfig(
        name="oai", base_url="https://api.example.test/v1", api_key=Secret("sk-x" * 6)
    )
    assert openai.build_request(call, openai_channel).body == call.raw_body


def test_json_mode_is_a_forced_tool_unless_tools_exist() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    body = translate(response_format=fmt)
    assert body["tools"] == [
        {
            "name": "json_response",
            "description": "Return the response as a JSON object.",
            "input_schema": schema,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    tool = {"type": "function", "function": {"name": "f"}}
    body = translate(response_format={"type": "json_object"}, tools=[tool])
    assert [t["name"] for t in body["tools"]] == ["f"]
    assert "JSON object" in body["system"]


# --- responses -------------------------------------------------------------------------------


def _message(content: list[dict[str, Any]], stop: str, **usage: int) -> bytes:
    base = {"input_tokens": 5, "output_tokens": 3}
    return orjson.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {**base, **usage},
        }
    )


def test_response_text_tools_and_cache_usage() -> None:
    body = _message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
        ],
        "tool_use",
        cache_read_input_tokens=100,
        cache_creation_input_tokens=20,
    )
    parsed = ADAPTER.parse_response(make_call(), body)
    out = orjson.loads(parsed.body)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["reasoning_content"] == "hmm"
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert parsed.usage == UsageTokens(prompt=125, completion=3, cached=100, cache_write=20)
    assert out["usage"]["prompt_tokens"] == 125
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    parsed = ADAPTER.parse_response(make_call(), _message([{"type": "text", "text": "x"}], stop))
    assert orjson.loads(parsed.body)["choices"][0]["finish_reason"] == finish


def test_json_mode_response_is_content() -> None:
    call = make_call(response_format={"type": "json_object"})
    body = _message(
        [{"type": "tool_use", "id": "t", "name": "json_response", "input": {"x": 1}}], "tool_use"
    )
    choice = orjson.loads(ADAPTER.parse_response(call, body).body)["choices"][0]
    assert choice["message"]["content"] == '{"x":1}' and "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"type": "error"}'])
def test_malformed_response_raises(body: bytes) -> None:
    with pytest.raises(UpstreamBadResponse):
        ADAPTER.parse_response(make_call(), body)


# --- errors ----------------------------------------------------------------------------------


def _error(kind: str, message: str = "msg") -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def test_error_classification() -> None:
    overloaded = ADAPTER.parse_error(529, {}, _error("overloaded_error", "Overloaded"))
    assert (overloaded.status, overloaded.kind) == (503, "overloaded")
    limited = ADAPTER.parse_error(429, {"retry-after": "12"}, _error("rate_limit_error"))
    assert (limited.status, limited.kind, limited.retry_after_s) == (429, "rate_limit", 12.0)
    auth = ADAPTER.parse_error(401, {}, _error("authentication_error", "bad key sk-ant-123"))
    assert (auth.status, auth.kind) == (502, "auth") and "sk-ant" not in auth.message
    client = ADAPTER.parse_error(400, {}, _error("invalid_request_error", "messages: bad"))
    assert (client.status, client.kind, client.message) == (400, "client", "messages: bad")
    assert client.type == "invalid_request_error"
    credit = ADAPTER.parse_error(
        400, {}, _error("invalid_request_error", "Your credit balance is too low")
    )
    assert (credit.status, credit.kind) == (502, "billing")
    server = ADAPTER.parse_error(500, {}, b"<html>oops</html>")
    assert (server.status, server.kind) == (502, "server")


# --- streams ---------------------------------------------------------------------------------


def _sse(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _frames_payloads(frames: list[bytes]) -> list[Any]:
    out = []
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        data = frame[6:-2]
        out.append(data.decode() if data == b"[DONE]" else orjson.loads(data))
    return out


START = {
    "type": "message_start",
    "message": {
        "id": "msg_s",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "cache_read_input_tokens": 4, "output_tokens": 1},
    },
}


def test_stream_usage_is_final_value_and_split_bytes_are_fine() -> None:
    translator = ADAPTER.stream_translator(make_call(stream=True, wants_usage=True))
    events: list[dict[str, Any]] = [
        START,
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 5},
        },
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 8}},
        {"type": "message_stop"},
    ]
    raw = b"".join(_sse(e) for e in events).replace(b"\n", b"\r\n")
    frames: list[bytes] = []
    for i in range(0, len(raw), 7):  # arbitrary boundaries, CRLFs split across reads too
        frames.extend(translator.feed(raw[i : i + 7]))
    frames.extend(translator.close())
    payloads = _frames_payloads(frames)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert payloads[2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[3]["usage"]["completion_tokens"] == 8  # final value, not 5 + 8
    assert payloads[3]["usage"]["prompt_tokens"] == 13
    assert payloads[-1] == "[DONE]"
    assert translator.usage == UsageTokens(prompt=13, completion=8, cached=4)
    assert translator.failure is None and translator.delivered_text() == "Hi"


def test_stream_error_event_becomes_error_frame() -> None:
    translator = ADAPTER.stream_translator(make_call(stream=True))
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    frames = translator.feed(_sse(START) + _sse(error))
    payloads = _frames_payloads(frames)
    assert payloads[-1]["error"]["code"] == "upstream_overloaded"
    assert translator.failure is not None and translator.failure.kind == "overloaded"
    assert translator.close() == []


def test_stream_without_message_stop_is_truncated() -> None:
    translator = ADAPTER.stream_translator(make_call(stream=True))
    translator.feed(_sse(START))
    payloads = _frames_payloads(translator.close())
    assert payloads[-1]["error"]["code"] == "upstream_stream_truncated"
    assert translator.failure is not None and translator.usage is None


def test_stream_json_mode_tool_input_becomes_content() -> None:
    call = make_call(stream=True, response_format={"type": "json_object"})
    translator = ADAPTER.stream_translator(call)
    events: list[dict[str, Any]] = [
        START,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "json_response", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"x"'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": ": 1}"},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    payloads = _frames_payloads(translator.feed(b"".join(_sse(e) for e in events)))
    content = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1])
    assert content == '{"x": 1}'
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"


def test_stream_tool_input_given_whole_at_block_start() -> None:
    translator = ADAPTER.stream_translator(make_call(stream=True))
    block = {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}}
    events: list[dict[str, Any]] = [
        START,
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    payloads = _frames_payloads(translator.feed(b"".join(_sse(e) for e in events)))
    calls = [c for p in payloads[:-1] for c in p["choices"][0]["delta"].get("tool_calls") or ()]
    assert calls[0]["id"] == "toolu_9" and calls[0]["function"]["name"] == "f"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a":1}'
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
