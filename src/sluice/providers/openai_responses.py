"""OpenAI's own ``/responses``, passed through (pure): metering a native Responses answer.

For ``openai`` and ``azure`` channels the Responses API is forwarded untouched (docs/responses.md,
*Pass-through*) and only metered: a whole ``response`` object carries ``usage``
(``input_tokens`` including cached ones, ``output_tokens`` including reasoning ones); a stream
ends with a terminal event (``response.completed``, ``response.incomplete`` or
``response.failed``) whose ``response`` carries it, and has no ``[DONE]``: the body simply ends
after that event.

``ResponsesPassThrough`` is the stream translator: it forwards each event as received, meters
the terminal one, and then adds the relay's own ``[DONE]`` frame, so the relay's stream session
ends and settles the stream as it does a chat stream; the Responses route removes that frame
before the client sees it (``inbound/responses_routes.py``). A body that ends before a terminal
event is a failure (``upstream_stream_truncated``), as for chat.
"""

from __future__ import annotations

from typing import Any

import orjson

from sluice.core import UpstreamFailure, UsageTokens
from sluice.providers.base import DONE_FRAME
from sluice.providers.failures import redact_secrets
from sluice.providers.sse import SseEventTooLarge, SseSplitter

__all__ = ["usage_of_response", "ResponsesStreamMeter", "ResponsesPassThrough", "TERMINAL_EVENTS"]

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of_response(response: Any) -> UsageTokens | None:
    """Tokens of a ``response`` object; None when it reports no usage."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
        return None
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    return UsageTokens(
        prompt=_count(usage.get("input_tokens")),
        completion=_count(usage.get("output_tokens")),
        cached=_count(details.get("cached_tokens")),
        cache_write=_count(details.get("cache_write_tokens")),
    )


def output_text_of(response: Any) -> str:
    """Generated text and call arguments of a ``response`` object, for local counting."""
    parts: list[str] = []
    output = response.get("output") if isinstance(response, dict) else None
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("arguments"), str):
            parts.append(str(item.get("name", "")) + item["arguments"])
        for part in item.get("content") or ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return "".join(parts)


class ResponsesStreamMeter:
    """Feed each decoded event payload of a Responses stream; read ``usage`` and ``ended``."""

    __slots__ = ("usage", "ended", "failed", "error", "response")

    def __init__(self) -> None:
        self.usage: UsageTokens | None = None
        self.ended = False  # a terminal event arrived: the end of the body is a clean end
        self.failed = False  # the response failed (response.failed, or an error event)
        self.error: dict[str, Any] | None = None  # the upstream's error, as sent
        self.response: dict[str, Any] | None = None  # the terminal event's response

    def feed(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "error":
            self.failed = True
            self.error = {k: event.get(k) for k in ("code", "message", "param")}
            return
        if kind not in TERMINAL_EVENTS:
            return
        self.ended = True
        response = event.get("response")
        self.response = response if isinstance(response, dict) else None
        self.usage = usage_of_response(response)
        if kind == "response.failed":
            self.failed = True
            error = response.get("error") if isinstance(response, dict) else None
            self.error = error if isinstance(error, dict) else None


class ResponsesPassThrough:
    """A ``core.StreamTranslator`` for a native Responses stream (events forwarded as is)."""

    def __init__(self, secret: str = "", max_event_bytes: int = 0) -> None:
        self._splitter = SseSplitter(max_event_bytes)
        self._secret = secret
        self._meter = ResponsesStreamMeter()
        self._failure: UpstreamFailure | None = None
        self._done = False
        self._delivered: list[str] = []  # deltas, counted when no usage arrives
        self._next_sequence = 0  # an error event of ours continues the upstream's numbering

    @property
    def usage(self) -> UsageTokens | None:
        return self._meter.usage

    @property
    def failure(self) -> UpstreamFailure | None:
        return self._failure

    def feed(self, data: bytes) -> list[bytes]:
        if self._done:
            return []
        try:
            events = self._splitter.feed(data)
        except SseEventTooLarge:
            return self._fail(
                "An upstream stream event was too large.", "upstream_response_too_large"
            )
        frames: list[bytes] = []
        for event in events:
            frames.extend(self._forward(event.event, event.data))
            if self._done:
                break
        return frames

    def _forward(self, name: bytes | None, payload: bytes) -> list[bytes]:
        if not payload:
            return []
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []  # not an event a client could use
        if not isinstance(event, dict):
            return []
        self._meter.feed(event)
        sequence = event.get("sequence_number")
        if isinstance(sequence, int):
            self._next_sequence = sequence + 1
        delta = event.get("delta")
        if isinstance(delta, str):
            self._delivered.append(delta)
        head = b"event: " + name + b"\n" if name else b""
        frame = head + b"data: " + payload + b"\n\n"
        if event.get("type") == "error":
            message = redact_secrets(str(event.get("message") or "upstream error"), self._secret)
            return self._fail(f"Upstream error during stream: {message}", "upstream_stream_error")
        if self._meter.ended:
            self._done = True
            return [frame, DONE_FRAME]  # the relay's end marker; the route removes it
        return [frame]

    def _fail(self, message: str, code: str) -> list[bytes]:
        self._failure = UpstreamFailure(status=502, kind="server", message=message, code=code)
        self._done = True
        error = {"type": "error", "code": code, "message": message, "param": None,
                 "sequence_number": self._next_sequence}  # fmt: skip
        return [b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"]

    def close(self) -> list[bytes]:
        if self._done:
            return []
        frames: list[bytes] = []
        for event in self._splitter.flush():
            frames.extend(self._forward(event.event, event.data))
        if self._done:
            return frames
        frames.extend(
            self._fail(
                "The upstream stream ended before it was complete.", "upstream_stream_truncated"
            )  # fmt: skip
        )
        return frames

    def delivered_text(self) -> str:
        return "".join(self._delivered)

    def forget_delivered(self) -> None:
        self._delivered.clear()
