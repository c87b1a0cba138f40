"""Anthropic Messages SSE events -> OpenAI chat completion chunks.

Event order (Anthropic): message_start, then per content block content_block_start /
content_block_delta* / content_block_stop, then message_delta (stop_reason, cumulative usage)
and message_stop; ``ping`` may appear anywhere and ``error`` may replace the rest.

Chunks emitted: the first carries the role (held back until there is output, so an early
``error`` event leaves nothing sent and the relay may still fail over); text deltas become
``content``; a tool_use block becomes one ``tool_calls`` entry (index, id, name) followed by
argument fragments; the final chunk carries ``finish_reason``; a usage chunk follows only if
the client asked and the upstream reported its output (else the relay adds one with the counts
it bills); then [DONE].
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.core import RelayCall, UpstreamFailure, UsageTokens
from sluice.providers.anthropic_request import JSON_TOOL_NAME, json_mode_forced
from sluice.providers.anthropic_response import finish_reason, openai_usage, usage_tokens
from sluice.providers.base import DONE_FRAME, sse_frame
from sluice.providers.failures import (
    redact_secrets,
    response_too_large,
    stream_truncated,
)
from sluice.providers.sse import SseEventTooLarge, SseSplitter

__all__ = ["AnthropicStreamTranslator", "stream_failure"]


def stream_failure(error: Any, secret: str = "") -> UpstreamFailure:
    """An ``error`` event's payload -> a failure (overloaded is retryable, as over HTTP)."""
    kind_name = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    overloaded = kind_name == "overloaded_error"
    text = redact_secrets(str(message or kind_name or "unknown error"), secret)
    return UpstreamFailure(
        status=503 if overloaded else 502,
        kind="overloaded" if overloaded else "server",
        message=f"Upstream error during stream: {text}",
        code="upstream_overloaded" if overloaded else "upstream_stream_error",
    )


@dataclass(slots=True)
class _State:
    id: str = "chatcmpl-anthropic"
    model: str = ""
    created: int = 0
    started: bool = False
    done: bool = False
    stop_reason: str | None = None
    start_usage: dict[str, Any] = field(default_factory=dict)
    final_usage: UsageTokens | None = None
    # Anthropic block index -> OpenAI tool_calls index (or -1 for the JSON-mode tool).
    tool_index: dict[int, int] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)


class AnthropicStreamTranslator:
    def __init__(self, call: RelayCall, secret: str = "") -> None:
        self._call = call
        self._secret = secret  # the channel's key, masked in error events
        self._json_mode = json_mode_forced(call.body)
        self._splitter = SseSplitter(call.max_event_bytes)
        self._state = _State(model=call.upstream_model, created=int(time.time()))
        self._failure: UpstreamFailure | None = None

    @property
    def usage(self) -> UsageTokens | None:
        # Only the final figure counts; before message_delta the output is unknown, so the
        # relay counts delivered text locally instead.
        return self._state.final_usage

    @property
    def failure(self) -> UpstreamFailure | None:
        return self._failure

    def delivered_text(self) -> str:
        return "".join(self._state.delivered)

    def forget_delivered(self) -> None:
        self._state.delivered.clear()

    def feed(self, data: bytes) -> list[bytes]:
        if self._state.done:
            return []
        try:
            events = self._splitter.feed(data)
        except SseEventTooLarge:
            return self._fail(response_too_large("stream event", self._splitter.limit))
        frames: list[bytes] = []
        for event in events:
            if not self._state.done and event.data:
                frames.extend(self._event(event.data))
        return frames

    def close(self) -> list[bytes]:
        frames: list[bytes] = []
        for event in self._splitter.flush():
            if not self._state.done and event.data:
                frames.extend(self._event(event.data))
        if self._state.done:
            return frames
        self._state.done = True
        self._failure = stream_truncated()
        return [*frames, sse_frame(orjson.dumps(self._failure.to_openai_error()))]

    # --- events ----------------------------------------------------------------------------

    def _event(self, payload: bytes) -> list[bytes]:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._fail(
                UpstreamFailure(
                    status=502,
                    kind="bad_response",
                    message="The upstream sent a stream event that is not JSON.",
                    code="bad_upstream_response",
                )
            )
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "message_start":
            return self._message_start(event.get("message"))
        if kind == "content_block_start":
            return self._block_start(event.get("index"), event.get("content_block"))
        if kind == "content_block_delta":
            return self._block_delta(event.get("index"), event.get("delta"))
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            return self._fail(stream_failure(event.get("error"), self._secret))
        return []  # ping, content_block_stop, and event types added later

    def _fail(self, failure: UpstreamFailure) -> list[bytes]:
        self._failure = failure
        self._state.done = True
        return [sse_frame(orjson.dumps(failure.to_openai_error()))]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        state = self._state
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {
            "id": state.id,
            "object": "chat.completion.chunk",
            "created": state.created,
            "model": state.model,
            "choices": [choice],
        }
        return sse_frame(orjson.dumps(chunk))

    def _ensure_started(self) -> list[bytes]:
        if self._state.started:
            return []
        self._state.started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _message_start(self, message: Any) -> list[bytes]:
        state = self._state
        if isinstance(message, dict):
            if isinstance(message.get("id"), str):
                state.id = f"chatcmpl-{message['id']}"
            if isinstance(message.get("model"), str):
                state.model = message["model"]
            if isinstance(message.get("usage"), dict):
                state.start_usage = dict(message["usage"])
        # No frame yet: the role chunk waits for the first output, so an error event that
        # arrives before any output still lets the relay fail over to another channel.
        return []

    def _block_start(self, index: Any, block: Any) -> list[bytes]:
        frames: list[bytes] = []
        if not isinstance(block, dict) or not isinstance(index, int):
            return frames
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            frames.extend(self._text(block["text"]))
        elif kind == "tool_use":
            state = self._state
            name = str(block.get("name"))
            if self._json_mode and name == JSON_TOOL_NAME:
                state.tool_index[index] = -1
                return frames
            position = sum(1 for v in state.tool_index.values() if v >= 0)
            state.tool_index[index] = position
            state.delivered.append(name)
            frames.extend(self._ensure_started())
            call = {
                "index": position,
                "id": str(block.get("id")),
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            frames.append(self._chunk({"tool_calls": [call]}))
            if isinstance(block.get("input"), dict) and block["input"]:
                # Some Anthropic-compatible servers send the whole input here, with no deltas.
                frames.extend(self._block_delta(index, _whole_input(block["input"])))
        return frames

    def _text(self, text: str) -> list[bytes]:
        self._state.delivered.append(text)
        return [*self._ensure_started(), self._chunk({"content": text})]

    def _block_delta(self, index: Any, delta: Any) -> list[bytes]:
        frames: list[bytes] = []
        if not isinstance(delta, dict):
            return frames
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            frames.extend(self._text(delta["text"]))
        elif kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            self._state.delivered.append(delta["thinking"])
            frames.extend(self._ensure_started())
            frames.append(self._chunk({"reasoning_content": delta["thinking"]}))
        elif kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            fragment = delta["partial_json"]
            position = self._state.tool_index.get(index) if isinstance(index, int) else None
            if not fragment or position is None:
                return frames
            if position < 0:  # JSON mode: the forced tool's input is the answer text
                frames.extend(self._text(fragment))
            else:
                self._state.delivered.append(fragment)
                frames.extend(self._ensure_started())
                call = {"index": position, "function": {"arguments": fragment}}
                frames.append(self._chunk({"tool_calls": [call]}))
        return frames  # signature_delta, citations_delta: nothing to relay

    def _message_delta(self, event: dict[str, Any]) -> list[bytes]:
        delta = event.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            self._state.stop_reason = delta["stop_reason"]
        usage = event.get("usage")
        if isinstance(usage, dict):
            # message_delta usage is cumulative: later values replace earlier ones, and any
            # input counts it repeats override message_start's.
            merged = {
                **self._state.start_usage,
                **{k: v for k, v in usage.items() if v is not None},
            }
            self._state.final_usage = usage_tokens(merged)
        return []

    def _message_stop(self) -> list[bytes]:
        state = self._state
        frames = self._ensure_started()
        finish = finish_reason(state.stop_reason, json_mode=self._json_mode)
        frames.append(self._chunk({}, finish))
        usage = state.final_usage
        # Without message_delta's usage the relay bills a local count and adds the usage chunk
        # itself, with that count (relay/stream_usage.py), so the client sees what is billed.
        if self._call.client_wants_usage and usage is not None:
            chunk = {
                "id": state.id,
                "object": "chat.completion.chunk",
                "created": state.created,
                "model": state.model,
                "choices": [],
                "usage": openai_usage(usage),
            }
            frames.append(sse_frame(orjson.dumps(chunk)))
        frames.append(DONE_FRAME)
        state.done = True
        return frames


def _whole_input(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "input_json_delta", "partial_json": orjson.dumps(value).decode()}
