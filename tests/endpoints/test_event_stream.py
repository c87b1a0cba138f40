"""OpenAI's typed-event streams pass through untouched, whatever the read boundaries; the
usage is taken from the final event, a stream cut before it is truncated, and an upstream's
error event reaches the client redacted, ending the stream."""

from __future__ import annotations

import orjson

from sluice.core import UsageTokens
from sluice.providers.openai_events import EventStreamTranslator

DELTA = b'event: transcript.text.delta\ndata: {"type":"transcript.text.delta","delta":"Hi "}\n\n'
DONE = (
    b'data: {"type":"transcript.text.done","text":"Hi there",'
    b'"usage":{"type":"tokens","input_tokens":40,"output_tokens":3,"total_tokens":43}}\n\n'
)


def _feed_bytewise(translator: EventStreamTranslator, data: bytes) -> bytes:
    return b"".join(b"".join(translator.feed(data[at : at + 1])) for at in range(len(data)))


def test_events_pass_through_as_sent_and_usage_comes_from_the_final_event() -> None:
    translator = EventStreamTranslator(max_event_bytes=4096)
    out = _feed_bytewise(translator, DELTA + b": keep-alive\n\n" + DELTA + DONE)
    assert out == DELTA + DELTA + DONE  # event lines kept; a comment dropped
    assert translator.usage == UsageTokens(prompt=40, completion=3)
    assert translator.close() == [] and translator.failure is None
    assert translator.feed(DELTA) == []  # nothing after the final event


def test_a_stream_cut_before_its_final_event_is_truncated() -> None:
    translator = EventStreamTranslator()
    assert translator.feed(DELTA) == [DELTA]
    [frame] = translator.close()
    assert translator.failure is not None
    assert translator.failure.code == "upstream_stream_truncated"
    assert orjson.loads(frame[len(b"data: ") :])["error"]["code"] == "upstream_stream_truncated"


def test_a_final_event_without_its_blank_line_still_completes() -> None:
    translator = EventStreamTranslator()
    assert translator.feed(DONE.rstrip(b"\n")) == []
    [frame] = translator.close()
    assert translator.failure is None and frame.startswith(b'data: {"type":"transcript.text.done"')
    assert translator.usage is not None and translator.usage.prompt == 40


def test_an_error_event_ends_the_stream_with_the_secret_masked() -> None:
    secret = "sk-upstream-secret-123456789"
    error = {"type": "error", "error": {"message": f"bad key {secret}", "code": "server_error"}}
    translator = EventStreamTranslator(secret=secret)
    frames = translator.feed(DELTA + b"data: " + orjson.dumps(error) + b"\n\n" + DELTA)
    assert frames[0] == DELTA and len(frames) == 2
    assert secret.encode() not in frames[1]
    assert translator.failure is not None and translator.failure.code == "server_error"
    assert translator.close() == []


def test_an_oversized_event_fails_the_stream() -> None:
    translator = EventStreamTranslator(max_event_bytes=64)
    [frame] = translator.feed(b'data: {"type":"transcript.text.delta","delta":"' + b"x" * 200)
    assert translator.failure is not None and b"error" in frame


def test_done_marker_of_compatible_servers_ends_the_stream() -> None:
    translator = EventStreamTranslator()
    assert translator.feed(DELTA + b"data: [DONE]\n\n") == [DELTA, b"data: [DONE]\n\n"]
    assert translator.close() == [] and translator.failure is None
