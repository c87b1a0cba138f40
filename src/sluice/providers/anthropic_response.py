"""Anthropic Messages response -> OpenAI chat completion (whole responses), plus the helpers
the stream translator shares: stop-reason mapping and usage conversion."""

from __future__ import annotations

import time
from typing import Any

import orjson

from sluice.core import ParsedResponse, RelayCall, UsageTokens
from sluice.errors import UpstreamBadResponse
from sluice.providers.anthropic_request import JSON_TOOL_NAME, json_mode_forced

__all__ = ["finish_reason", "openai_usage", "parse_message", "usage_tokens"]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any, *, json_mode: bool) -> str:
    reason = _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    # In JSON mode the forced tool call *is* the answer: the client asked for content.
    return "stop" if json_mode and reason == "tool_calls" else reason


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_tokens(usage: dict[str, Any]) -> UsageTokens:
    """Anthropic counts cache reads and writes apart from input_tokens; OpenAI's prompt_tokens
    includes them, with the cached part reported separately."""
    cached = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    return UsageTokens(
        prompt=_int(usage.get("input_tokens")) + cached + written,
        completion=_int(usage.get("output_tokens")),
        cached=cached,
        cache_write=written,
    )


def openai_usage(usage: UsageTokens) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
    }


def _message(content: list[Any], json_mode: bool) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise UpstreamBadResponse("The upstream returned a malformed content block.")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if json_mode and block.get("name") == JSON_TOOL_NAME:
                texts.append(arguments)
                continue
            calls.append(
                {
                    "id": str(block.get("id")),
                    "type": "function",
                    "function": {"name": str(block.get("name")), "arguments": arguments},
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)  # the common extension field
    return message


def parse_message(call: RelayCall, body: bytes) -> ParsedResponse:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse("The upstream returned a body that is not JSON.") from None
    if (
        not isinstance(parsed, dict)
        or parsed.get("type") != "message"
        or not isinstance(parsed.get("content"), list)
    ):
        raise UpstreamBadResponse("The upstream response is not an Anthropic message.")
    json_mode = json_mode_forced(call.body)
    raw_usage = parsed.get("usage")
    usage = usage_tokens(raw_usage) if isinstance(raw_usage, dict) else None
    model = parsed.get("model")
    payload: dict[str, Any] = {
        "id": f"chatcmpl-{parsed.get('id', 'anthropic')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) else call.upstream_model,
        "choices": [
            {
                "index": 0,
                "message": _message(parsed["content"], json_mode),
                "logprobs": None,
                "finish_reason": finish_reason(parsed.get("stop_reason"), json_mode=json_mode),
            }
        ],
    }
    if usage is not None:
        payload["usage"] = openai_usage(usage)
    return ParsedResponse(body=orjson.dumps(payload), usage=usage)
