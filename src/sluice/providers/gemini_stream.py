"""Gemini ``streamGenerateContent?alt=sse`` -> OpenAI chat completion chunks.

Each SSE ``data:`` is a whole ``GenerateContentResponse`` holding the next slice of every
candidate. Text becomes content deltas, a function call (Gemini sends it complete, never in
pieces) becomes a tool_call header delta followed by one arguments delta, and a candidate's
``finishReason`` becomes its final chunk. ``usageMetadata`` is repeated with growing counts,
so the last one is the usage. A stream that ends before every candidate it opened has
finished is reported as truncated.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from sluice.core import UpstreamFailure, UsageTokens
from sluice.providers.base import DONE_FRAME, sse_frame
from sluice.providers.event_translator import EventTranslator
from sluice.providers.failures import stream_truncated
from sluice.providers.gemini_response import (
    blocked_reason,
    failure_from_error,
    finish_reason,
    openai_usage,
    split_parts,
    usage_from_gemini,
)

__all__ = ["GeminiStreamTranslator"]


@dataclass(slots=True)
class _Choice:
    started: bool = False
    finished: bool = False
    tool_calls: int = 0


class GeminiStreamTranslator(EventTranslator):
    def __init__(
        self,
        *,
        model: str,
        n: int,
        include_usage: bool,
        secret: str = "",
        max_event_bytes: int = 0,
    ) -> None:
        super().__init__(max_event_bytes)
        self._model = model
        self._secret = secret  # the channel's key, masked in error events
        self._n = max(n, 1)
        self._include_usage = include_usage
        self._id = "chatcmpl-" + secrets.token_hex(12)
        self._created = int(time.time())
        self._choices: dict[int, _Choice] = {}
        self._reasoning = 0

    def close(self) -> list[bytes]:
        if self._done:
            return []
        frames: list[bytes] = []
        for event in self._splitter.flush():
            if not self._done:
                frames.extend(self._event(event.data))
        if self._done:
            return frames
        self._done = True
        opened = self._choices.values()
        if not opened or not all(choice.finished for choice in opened):
            return [*frames, self._fail(stream_truncated())]
        if self._include_usage and self._usage is not None:
            frames.append(self._usage_frame(self._usage))
        frames.append(DONE_FRAME)
        return frames

    # --- one upstream event -------------------------------------------------------------------

    def _event(self, payload: bytes) -> list[bytes]:
        if not payload.strip():
            return []
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            return [self._fail(_bad_event())]
        if isinstance(parsed.get("error"), dict):
            error = parsed["error"]
            code = error.get("code")
            status = code if isinstance(code, int) else 500
            failure = failure_from_error(status, {}, error, self._secret)
            return [self._fail(failure)]
        usage = usage_from_gemini(parsed.get("usageMetadata"))
        if usage is not None:
            self._usage = usage
            thoughts = parsed["usageMetadata"].get("thoughtsTokenCount")
            self._reasoning = thoughts if isinstance(thoughts, int) else 0
        frames: list[bytes] = []
        candidates = parsed.get("candidates")
        if isinstance(candidates, list) and candidates:
            for position, candidate in enumerate(candidates):
                if isinstance(candidate, dict):
                    index = candidate.get("index", position)
                    frames.extend(
                        self._candidate(index if isinstance(index, int) else 0, candidate)
                    )
        elif blocked_reason(parsed) is not None:
            for index in range(self._n):
                frames.extend(self._blocked(index))
        return frames

    def _candidate(self, index: int, candidate: dict[str, Any]) -> list[bytes]:
        state = self._choices.setdefault(index, _Choice())
        if state.finished:
            return []
        parts = split_parts(candidate)
        frames: list[bytes] = []
        text = "".join(parts.text)
        if text or not state.started:
            frames.append(self._chunk(index, self._delta(state, content=text)))
            self._delivered.append(text)
        for call in parts.tool_calls:
            frames.extend(self._tool_call(index, state, call))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            state.finished = True
            mapped = finish_reason(reason, state.tool_calls > 0)
            frames.append(self._chunk(index, {}, mapped))
        return frames

    def _tool_call(self, index: int, state: _Choice, call: dict[str, Any]) -> list[bytes]:
        """Gemini sends a call whole; it is relayed in OpenAI's own two steps (id and name with
        empty arguments, then the arguments) so clients written against OpenAI's streams, which
        take the name from the first fragment and append the rest, read it unchanged."""
        function = call["function"]
        header = {**call, "index": state.tool_calls, "function": {**function, "arguments": ""}}
        arguments = {"index": state.tool_calls, "function": {"arguments": function["arguments"]}}
        state.tool_calls += 1
        self._delivered.extend((function["name"], function["arguments"]))
        first = self._delta(state)
        first["tool_calls"] = [header]
        return [self._chunk(index, first), self._chunk(index, {"tool_calls": [arguments]})]

    def _blocked(self, index: int) -> list[bytes]:
        state = self._choices.setdefault(index, _Choice())
        if state.finished:
            return []
        frames = [self._chunk(index, self._delta(state, content=""))]
        state.finished = True
        frames.append(self._chunk(index, {}, "content_filter"))
        return frames

    # --- frames -------------------------------------------------------------------------------

    @staticmethod
    def _delta(state: _Choice, **fields: Any) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if not state.started:
            state.started = True
            delta["role"] = "assistant"
        delta.update(fields)
        return delta

    def _base(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = self._base()
        chunk["choices"] = [
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        ]
        return sse_frame(orjson.dumps(chunk))

    def _usage_frame(self, usage: UsageTokens) -> bytes:
        chunk = self._base()
        chunk["choices"] = []
        chunk["usage"] = openai_usage(usage, self._reasoning)
        return sse_frame(orjson.dumps(chunk))


def _bad_event() -> UpstreamFailure:
    return UpstreamFailure(
        status=502,
        kind="bad_response",
        message="The upstream sent a stream event that is not a JSON object.",
        code="bad_upstream_response",
    )
