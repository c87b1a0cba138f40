"""OpenAI's typed-event streams (images ``image_generation.*``, speech ``speech.audio.*``,
transcription ``transcript.text.*``) passed through as sent.

These streams differ from chat's chunk streams: every event names its ``type``, the usage rides
in a final event (``image_generation.completed``, ``speech.audio.done``,
``transcript.text.done``) rather than in a chunk of its own, and no ``[DONE]`` follows. So the
events are forwarded untouched (``event:`` lines included); only an event that may carry usage,
an error or the end is decoded (a partial image is megabytes of base64 that metering never
needs). A stream that stops before its end is truncated, as a chat stream without ``[DONE]``
is. ``*.completed`` marks the stream complete but more may follow (one per image when ``n`` > 1);
the audio endpoints' done events and ``[DONE]`` end it.
"""

from __future__ import annotations

from typing import Any

import orjson

from sluice.providers.base import DONE_FRAME, sse_frame
from sluice.providers.event_translator import EventTranslator
from sluice.providers.failures import (
    response_too_large,
    stream_error,
    stream_truncated,
)
from sluice.providers.openai import openai_error_details, usage_from_openai
from sluice.providers.sse import SseEventTooLarge, parse_span

__all__ = ["EventStreamTranslator"]

# Events after which nothing follows (the OpenAI adapter's knowledge of OpenAI's wire format).
_ENDING_EVENTS = frozenset({"speech.audio.done", "transcript.text.done"})
_COMPLETED_SUFFIX = ".completed"
# Bytes one of the events worth decoding has within its first bytes (``type`` comes first).
_DECODE_MARKERS = (b'.completed"', b'.done"', b"error")


class EventStreamTranslator(EventTranslator):
    """A ``core.StreamTranslator`` over an OpenAI typed-event stream. Events are forwarded as
    the blocks they arrived in (``event:`` lines kept), so ``feed`` reads spans rather than the
    parsed events the base class hands to ``_event``; nothing is counted locally (audio,
    transcripts and images are not priced by their text)."""

    def __init__(self, *, secret: str = "", max_event_bytes: int = 0) -> None:
        super().__init__(max_event_bytes)
        self._secret = secret  # the channel's key, masked in error events
        self._completed = False  # a completed event or usage arrived: the end may be the body's

    def feed(self, data: bytes) -> list[bytes]:
        if self._done:
            return []
        try:
            span = self._splitter.take_complete(data)
        except SseEventTooLarge:
            return [self._fail(response_too_large("stream event", self._splitter.limit))]
        frames: list[bytes] = []
        for block in span.split(b"\n\n") if span else ():
            frame = self._block(block)
            if frame is not None:
                frames.append(frame)
            if self._done:
                break
        return frames

    def _block(self, block: bytes) -> bytes | None:
        events = parse_span(block)
        if not events:
            return None  # a comment or a keep-alive: nothing a client needs
        payload = events[0].data
        if payload == b"[DONE]":  # some OpenAI-compatible servers end every stream so
            self._done = True
            return DONE_FRAME
        head = payload[:96]
        if b'"usage"' not in payload and not any(m in head for m in _DECODE_MARKERS):
            return block + b"\n\n"  # a delta: forwarded undecoded
        event = _loads(payload)
        if event is None:
            return block + b"\n\n"
        kind = event.get("type")
        if kind == "error" or (kind is None and "error" in event):
            return self._error_event(payload)
        usage = event.get("usage")
        if isinstance(usage, dict):
            self._usage = usage_from_openai(usage)  # the last one is the final value
            self._completed = True
        if kind in _ENDING_EVENTS:
            self._done = True
        elif isinstance(kind, str) and kind.endswith(_COMPLETED_SUFFIX):
            self._completed = True
        return block + b"\n\n"

    def _error_event(self, payload: bytes) -> bytes:
        message, code, _param, _type = openai_error_details(payload)
        if message is None:  # {"type": "error", "message": ...}: the fields at the top level
            message, code, _param, _type = openai_error_details(
                orjson.dumps({"error": _loads(payload)})
            )
        return self._fail(stream_error(message, code, self._secret))

    def close(self) -> list[bytes]:
        if self._done:
            return []
        frames: list[bytes] = []
        for event in self._splitter.flush():  # a final event without its blank line
            block = b"data: " + event.data
            if event.event is not None:
                block = b"event: " + event.event + b"\n" + block
            frame = self._block(block)
            if frame is not None:
                frames.append(frame)
        if self._done or self._completed:
            self._done = True
            return frames
        self._failure = stream_truncated()
        self._done = True
        return [*frames, sse_frame(orjson.dumps(self._failure.to_openai_error()))]


def _loads(payload: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
