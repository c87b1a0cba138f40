"""Metering a native Responses answer (the pass-through's meter): whole bodies and streams,
fed with what the translation itself produces (spec-valid) and with sparse or hostile input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.core import UsageTokens
from sluice.protocol.responses_request import to_chat_request
from sluice.protocol.responses_response import ResponseContext, to_response
from sluice.protocol.responses_stream import ResponsesStreamWriter
from sluice.providers.base import DONE_FRAME
from sluice.providers.openai_responses import (
    ResponsesPassThrough,
    ResponsesStreamMeter,
    usage_of_response,
)
from tests.protocol.response_events import parse_sse

CHAT_USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 8,
    "total_tokens": 38,
    "prompt_tokens_details": {"cached_tokens": 12},
}


def context() -> ResponseContext:
    echo = to_chat_request({"model": "m", "input": "hi"}).echo
    return ResponseContext("resp_u", "m", echo, 5, lambda text: len(text.split()))


def test_whole_response_usage() -> None:
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                               "finish_reason": "stop"}], "usage": CHAT_USAGE}  # fmt: skip
    response = to_response(completion, context())
    assert usage_of_response(response) == UsageTokens(prompt=30, completion=8, cached=12)


@pytest.mark.parametrize(
    "response",
    [None, [], {}, {"usage": None}, {"usage": {"output_tokens": 3}}, {"usage": "x"}],
)
def test_no_usage(response: Any) -> None:
    assert usage_of_response(response) is None


def test_negative_or_odd_counts_are_zero() -> None:
    odd = {"usage": {"input_tokens": 4, "output_tokens": -2,
                     "input_tokens_details": {"cached_tokens": True}}}  # fmt: skip
    assert usage_of_response(odd) == UsageTokens(prompt=4, completion=0, cached=0)


def _events(chunks: list[dict[str, Any]], done: bool) -> list[dict[str, Any]]:
    writer = ResponsesStreamWriter(context())
    frames = [frame for chunk in chunks for frame in writer.feed_chunk(chunk)]
    frames.extend(writer.done() if done else writer.close())
    return [data for _, data in parse_sse(b"".join(frames))]


def test_stream_usage_from_the_terminal_event() -> None:
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": CHAT_USAGE},
    ]
    meter = ResponsesStreamMeter()
    for event in _events(chunks, done=True):
        assert not meter.ended  # nothing before the terminal event ends it
        meter.feed(event)
    assert meter.ended and not meter.failed
    assert meter.usage == UsageTokens(prompt=30, completion=8, cached=12)


def test_failed_stream() -> None:
    meter = ResponsesStreamMeter()
    for event in _events([{"choices": [{"index": 0, "delta": {"content": "x"}}]}], done=False):
        meter.feed(event)
    assert meter.ended and meter.failed
    assert meter.error is not None and meter.error["code"] == "server_error"
    assert meter.usage is not None and meter.usage.prompt == 5  # counted locally


def test_error_event_and_junk() -> None:
    meter = ResponsesStreamMeter()
    for junk in (None, "x", {"type": "response.output_text.delta", "delta": "a"}):
        meter.feed(junk)
    assert not meter.ended and meter.usage is None
    meter.feed({"type": "error", "code": "server_error", "message": "boom", "param": None,
                "sequence_number": 3})  # fmt: skip
    assert meter.failed and not meter.ended
    assert meter.error == {"code": "server_error", "message": "boom", "param": None}


# --- the pass-through stream translator --------------------------------------------------------


def _wire(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


def _upstream_events() -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": CHAT_USAGE},
    ]
    return _events(chunks, done=True)


@pytest.mark.parametrize("piece", [1, 7, 64, 100_000])
def test_pass_through_forwards_events_as_received(piece: int) -> None:
    wire = _wire(_upstream_events())
    translator = ResponsesPassThrough("sk-secret")
    frames: list[bytes] = []
    for start in range(0, len(wire), piece):
        frames.extend(translator.feed(wire[start : start + piece]))
    frames.extend(translator.close())
    assert frames[-1] == DONE_FRAME  # the relay's end marker, after the terminal event
    assert b"".join(frames[:-1]) == wire  # everything else byte for byte
    assert translator.failure is None
    assert translator.usage == UsageTokens(prompt=30, completion=8, cached=12)
    assert translator.delivered_text() == "Hello"
    translator.forget_delivered()
    assert translator.delivered_text() == ""


def test_pass_through_truncated_or_failing_streams() -> None:
    events = _upstream_events()
    cut = ResponsesPassThrough()
    frames = cut.feed(_wire(events[:4])) + cut.close()
    assert cut.failure is not None and cut.failure.code == "upstream_stream_truncated"
    error = orjson.loads(frames[-1].split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["sequence_number"] == 4
    assert DONE_FRAME not in frames

    failing = ResponsesPassThrough("sk-secret")
    upstream_error = {"type": "error", "code": "server_error", "param": None,
                      "message": "bad key sk-secret", "sequence_number": 2}  # fmt: skip
    frames = failing.feed(_wire([*events[:2], upstream_error, events[-1]]))
    assert failing.failure is not None and "sk-secret" not in failing.failure.message
    assert b"sk-secret" not in b"".join(frames) and len(frames) == 3  # nothing after the error
    assert failing.feed(_wire(events[-1:])) == [] and failing.close() == []


def test_pass_through_event_size_cap() -> None:
    translator = ResponsesPassThrough(max_event_bytes=64)
    frames = translator.feed(b"data: " + b"x" * 200)
    assert translator.failure is not None
    assert translator.failure.code == "upstream_response_too_large" and len(frames) == 1
