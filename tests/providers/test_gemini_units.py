"""Pure pieces of the gemini adapter: stream translation edge cases, usage, errors, schemas."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.errors import InvalidRequest
from sluice.metering.pricing import UsageTokens
from sluice.providers.base import DONE_FRAME
from sluice.providers.gemini import GeminiAdapter
from sluice.providers.gemini_request import chat_body
from sluice.providers.gemini_response import usage_from_gemini
from sluice.providers.gemini_schema import clean_schema
from sluice.providers.gemini_stream import GeminiStreamTranslator


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


def text_event(text: str, index: int = 0, finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    candidate["index"] = index
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 3}}


def chunks_of(frames: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(f[6:]) for f in frames if f != DONE_FRAME]


def test_stream_split_at_every_byte_gives_the_same_frames() -> None:
    raw = event(text_event("Hel")) + event(text_event("lo", finish="STOP"))
    whole = GeminiStreamTranslator(model="m", n=1, include_usage=False)
    expected = chunks_of(whole.feed(raw) + whole.close())
    split = GeminiStreamTranslator(model="m", n=1, include_usage=False)
    frames: list[bytes] = []
    for i in range(len(raw)):
        frames += split.feed(raw[i : i + 1])
    frames += split.close()
    got = chunks_of(frames)
    for chunk in got + expected:
        chunk.pop("id")
        chunk.pop("created")
    assert got == expected and frames[-1] == DONE_FRAME
    assert split.delivered_text() == "Hello" and split.failure is None


def test_stream_with_two_candidates_needs_both_finished() -> None:
    translator = GeminiStreamTranslator(model="m", n=2, include_usage=False)
    frames = translator.feed(event(text_event("a", 0, "STOP")) + event(text_event("b", 1)))
    assert [c["choices"][0]["index"] for c in chunks_of(frames)] == [0, 0, 1]
    closing = translator.close()
    assert translator.failure is not None and translator.failure.kind == "bad_response"
    assert b"upstream_stream_truncated" in closing[-1]


def test_stream_error_event_stops_the_stream() -> None:
    translator = GeminiStreamTranslator(model="m", n=1, include_usage=True)
    error = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    frames = translator.feed(event(text_event("Hi")) + event(error) + event(text_event("!")))
    assert len(frames) == 2 and b"overloaded" in frames[-1]
    assert translator.failure is not None and translator.failure.kind == "server"
    assert translator.close() == []


def test_stream_usage_is_the_last_value_and_counts_thoughts() -> None:
    translator = GeminiStreamTranslator(model="m", n=1, include_usage=True)
    first = text_event("a")
    last = text_event("b", finish="STOP")
    first["usageMetadata"] = {"promptTokenCount": 9, "candidatesTokenCount": 1}
    last["usageMetadata"] = {
        "promptTokenCount": 9, "candidatesTokenCount": 2, "thoughtsTokenCount": 4,
        "cachedContentTokenCount": 5,
    }  # fmt: skip
    frames = translator.feed(event(first) + event(last)) + translator.close()
    usage = orjson.loads(frames[-2][6:])["usage"]
    assert usage["completion_tokens"] == 6 and usage["prompt_tokens"] == 9
    assert usage["prompt_tokens_details"] == {"cached_tokens": 5}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 4}
    assert translator.usage == UsageTokens(prompt=9, completion=6, cached=5)


def test_usage_mapping_includes_tool_use_prompt() -> None:
    metadata = {"promptTokenCount": 10, "toolUsePromptTokenCount": 3, "candidatesTokenCount": 2}
    assert usage_from_gemini(metadata) == UsageTokens(prompt=13, completion=2)
    assert usage_from_gemini(None) is None


@pytest.mark.parametrize(
    ("status", "body", "kind", "client_status"),
    [
        (400, {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad"}, "client", 400),
        (404, {"code": 404, "status": "NOT_FOUND", "message": "no model"}, "client", 404),
        (403, {"code": 403, "status": "PERMISSION_DENIED", "message": "x"}, "auth", 502),
        (429, {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "q"}, "rate_limit", 429),
        (503, {"code": 503, "status": "UNAVAILABLE", "message": "busy"}, "server", 502),
        (504, {"code": 504, "status": "DEADLINE_EXCEEDED", "message": "late"}, "timeout", 504),
    ],
)
def test_error_classification(
    status: int, body: dict[str, Any], kind: str, client_status: int
) -> None:
    failure = GeminiAdapter().parse_error(status, {}, orjson.dumps({"error": body}))
    assert (failure.kind, failure.status) == (kind, client_status)


def test_streaming_error_list_and_junk_bodies() -> None:
    wrapped = orjson.dumps([{"error": {"code": 400, "message": "bad", "status": "X"}}])
    assert GeminiAdapter().parse_error(400, {}, wrapped).message == "bad"
    assert GeminiAdapter().parse_error(502, {}, b"<html>").kind == "server"


def test_assistant_arguments_must_be_a_json_object() -> None:
    bad = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [bad]}]
    with pytest.raises(InvalidRequest) as caught:
        chat_body({"messages": messages}, [])
    assert caught.value.param == "messages[1].tool_calls[0].function"


def test_clean_schema_inlines_refs_and_drops_unsupported_keywords() -> None:
    schema = {
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
        "type": "object",
        "properties": {
            "at": {"$ref": "#/$defs/Point"},
            "kind": {"const": "pin"},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
        "required": ["at", "ghost"],
        "additionalProperties": False,
    }
    assert clean_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "at": {"type": "OBJECT", "properties": {"x": {"type": "NUMBER"}}},
            "kind": {"enum": ["pin"]},
            "maybe": {"type": "INTEGER", "nullable": True, "default": None},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
        },
        "required": ["at"],
    }


def test_clean_schema_survives_recursive_refs() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    cleaned = clean_schema(schema)
    assert cleaned["type"] == "OBJECT"
    assert len(orjson.dumps(cleaned)) < 2000
