"""The pure Anthropic <-> OpenAI translations, case by case (no servers)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.errors import InvalidRequest
from sluice.inbound.anthropic_request import to_openai_chat
from sluice.inbound.anthropic_response import (
    AnthropicStreamWriter,
    MessageContext,
    error_type_for_status,
    to_anthropic_message,
)


def _context(stops: tuple[str, ...] = ()) -> MessageContext:
    return MessageContext(
        message_id="msg_test",
        model="m",
        stop_sequences=stops,
        input_tokens_estimate=9,
        count_text=lambda text: len(text.split()),
    )


def _params(**extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def test_stream_always_asks_for_usage() -> None:
    body = to_openai_chat(_params(stream=True, top_k=3, thinking={"type": "enabled"}))
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "top_k" not in body and "thinking" not in body


def test_tool_result_images_follow_in_a_user_message() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://x.test/p.png"}}
    body = to_openai_chat(
        _params(
            messages=[
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "tool_use", "id": "t1", "name": "shot", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "done"}, image],
                        }
                    ],
                },
            ]
        )
    )
    assert body["messages"] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "shot", "arguments": '{"a":1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "done"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x.test/p.png"}}],
        },
    ]


def test_documents_and_system_role_messages() -> None:
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
    }
    body = to_openai_chat(
        _params(
            messages=[
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [document, {"type": "text", "text": "sum it"}]},
            ]
        )
    )
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "doc\n\nsum it"},
    ]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"model": "m", "messages": []}, "max_tokens"),
        (_params(max_tokens="10"), "max_tokens"),
        (_params(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0"),
        (_params(tool_choice={"type": "sometimes"}), "tool_choice"),
        (_params(stop_sequences="END"), "stop_sequences"),
        (
            _params(messages=[{"role": "user", "content": [{"type": "audio"}]}]),
            "messages.0.content.0",
        ),
        (_params(system=[{"type": "image"}]), "system"),
    ],
)
def test_invalid_requests_name_the_field(params: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_openai_chat(params)
    assert caught.value.param == param and caught.value.http_status == 400


def test_whole_message_usage_cache_and_bad_tool_arguments() -> None:
    completion = {
        "choices": [
            {
                "message": {
                    "content": "",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{oops"}}],
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 60},
        },
    }
    message = to_anthropic_message(completion, _context())
    assert message["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]
    assert message["stop_reason"] == "tool_use"  # tool calls even though finish said "stop"
    assert message["usage"] == {
        "input_tokens": 40,
        "output_tokens": 5,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }


def test_whole_message_without_usage_counts_locally() -> None:
    completion = {"choices": [{"message": {"content": "a b c"}, "finish_reason": "length"}]}
    message = to_anthropic_message(completion, _context())
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"] == {"input_tokens": 9, "output_tokens": 3}


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
    return b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n"


def _events(frames: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in frames:
        name, data = frame.decode().rstrip("\n").split("\n")
        out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


STREAM = b"".join(
    [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hi"}),
        _chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        _chunk({}, "tool_calls"),
        b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}}\n\n',
        b"data: [DONE]\n\n",
    ]
)


def test_stream_is_the_same_however_bytes_are_split() -> None:
    whole = AnthropicStreamWriter(_context())
    expected = _events(whole.feed(STREAM) + whole.close())
    for size in (1, 7, 64):
        writer = AnthropicStreamWriter(_context())
        frames: list[bytes] = []
        for start in range(0, len(STREAM), size):
            frames.extend(writer.feed(STREAM[start : start + size]))
        frames.extend(writer.close())
        assert _events(frames) == expected
    names = [name for name, _ in expected]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert expected[4][1]["content_block"] == {
        "type": "tool_use",
        "id": "c1",
        "name": "f",
        "input": {},
    }
    assert expected[4][1]["index"] == 1
    assert expected[8][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert expected[8][1]["usage"]["output_tokens"] == 4


def test_stream_error_frame_becomes_error_event() -> None:
    writer = AnthropicStreamWriter(_context())
    frames = writer.feed(_chunk({"content": "partial"}))
    error = {"error": {"message": "boom", "type": "upstream_error", "code": "upstream_timeout"}}
    frames += writer.feed(b"data: " + orjson.dumps(error) + b"\n\n")
    frames += writer.feed(_chunk({"content": "ignored"}))
    frames += writer.close()
    events = _events(frames)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "timeout_error", "message": "boom"}},
    )
    assert all(name != "message_stop" for name, _ in events)


def test_stream_without_done_or_usage() -> None:
    writer = AnthropicStreamWriter(_context(stops=("END",)))
    frames = writer.feed(_chunk({"content": "one two"}) + _chunk({}, "stop", stop_reason="END"))
    assert _events(writer.feed(b"data: [DONE]\n\n"))[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
        "usage": {"input_tokens": 9, "output_tokens": 2},
    }
    assert frames and writer.close() == []
    cut = AnthropicStreamWriter(_context())
    cut.feed(_chunk({"content": "x"}))
    assert _events(cut.close())[-1][0] == "error"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (415, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
    ],
)
def test_error_types(status: int, kind: str) -> None:
    assert error_type_for_status(status) == kind


def _thinking_context(enabled: bool) -> MessageContext:
    return MessageContext(
        message_id="msg_t",
        model="m",
        stop_sequences=(),
        input_tokens_estimate=9,
        count_text=len,  # one "token" per character
        thinking=enabled,
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_reasoning_is_shown_only_when_thinking_was_asked_for(enabled: bool) -> None:
    completion = {
        "choices": [
            {
                "message": {"content": "42", "reasoning_content": "six by seven"},
                "finish_reason": "stop",
            }
        ]
    }
    message = to_anthropic_message(completion, _thinking_context(enabled))
    thinking = {"type": "thinking", "thinking": "six by seven", "signature": ""}
    text = {"type": "text", "text": "42"}
    assert message["content"] == ([thinking, text] if enabled else [text])
    assert message["usage"]["output_tokens"] == 14  # reasoning is output either way

    writer = AnthropicStreamWriter(_thinking_context(enabled))
    frames = writer.feed(
        _chunk({"reasoning_content": "six by"})
        + _chunk({"reasoning": " seven"})
        + _chunk({"content": "42"}, "stop")
        + b"data: [DONE]\n\n"
    )
    events = _events(frames)
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == (["thinking", "text"] if enabled else ["text"])
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    if enabled:
        assert deltas[:2] == [
            {"type": "thinking_delta", "thinking": "six by"},
            {"type": "thinking_delta", "thinking": " seven"},
        ]
    assert events[-2][1]["usage"]["output_tokens"] == 14
