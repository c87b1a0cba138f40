"""The skeleton of a stream translator that turns one upstream SSE event at a time into client
frames: the splitter with its event cap, the usage and failure it reports, the text kept for
local counting, and the error frame that ends a stream. A provider's translator says what one
event becomes (``_event``) and how the stream ends (``close``)."""

from __future__ import annotations

import orjson

from sluice.core import UpstreamFailure, UsageTokens
from sluice.providers.base import sse_frame
from sluice.providers.failures import response_too_large
from sluice.providers.sse import SseEventTooLarge, SseSplitter

__all__ = ["EventTranslator"]


class EventTranslator:
    def __init__(self, max_event_bytes: int = 0) -> None:
        self._splitter = SseSplitter(max_event_bytes)
        self._usage: UsageTokens | None = None
        self._failure: UpstreamFailure | None = None
        self._done = False
        self._delivered: list[str] = []  # generated text, for local counting

    @property
    def usage(self) -> UsageTokens | None:
        return self._usage

    @property
    def failure(self) -> UpstreamFailure | None:
        return self._failure

    def delivered_text(self) -> str:
        return "".join(self._delivered)

    def forget_delivered(self) -> None:
        self._delivered.clear()

    def feed(self, data: bytes) -> list[bytes]:
        if self._done:
            return []
        try:
            events = self._splitter.feed(data)
        except SseEventTooLarge:
            return [self._fail(response_too_large("stream event", self._splitter.limit))]
        frames: list[bytes] = []
        for event in events:
            if self._done:
                break
            frames += self._event(event.data)
        return frames

    def _event(self, payload: bytes) -> list[bytes]:
        raise NotImplementedError  # what one event's data becomes

    def _fail(self, failure: UpstreamFailure) -> bytes:
        """End the stream with ``failure``: the error frame the client gets last."""
        self._failure = failure
        self._done = True
        return sse_frame(orjson.dumps(failure.to_openai_error()))
