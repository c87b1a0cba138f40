"""OpenAI chat results -> Anthropic Messages results (pure, no I/O).

``to_anthropic_message`` converts a whole ``chat.completion``; ``AnthropicStreamWriter`` turns
the OpenAI SSE frames of a stream, incrementally, into Anthropic's named events:
``message_start``, per block ``content_block_start`` / ``content_block_delta`` (``text_delta`` or
``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (stop reason and usage)
and ``message_stop``; an upstream error mid-stream becomes an ``error`` event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.providers.failures import redact_secrets
from sluice.providers.sse import SseSplitter

__all__ = [
    "MessageContext",
    "AnthropicStreamWriter",
    "to_anthropic_message",
    "stop_reason_of",
    "anthropic_usage",
    "error_type_for_status",
]

log = logging.getLogger("sluice.inbound")


@dataclass(frozen=True, slots=True)
class MessageContext:
    message_id: str
    model: str  # the model name the client asked for
    stop_sequences: tuple[str, ...]
    input_tokens_estimate: int  # counted locally, used until/unless the upstream reports usage
    count_text: Callable[[str], int]
    # The client enabled extended thinking: upstream reasoning text is shown as thinking blocks
    # (with an empty signature, as no Anthropic model signed it); otherwise it is not shown.
    thinking: bool = False


def error_type_for_status(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (the status itself is kept as is)."""
    if status == 401:
        return "authentication_error"
    if status == 402:
        return "billing_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 413:
        return "request_too_large"
    if status == 429:
        return "rate_limit_error"
    if status == 503 or status == 529:
        return "overloaded_error"
    if status == 504:
        return "timeout_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def stop_reason_of(
    finish: Any, matched: Any, has_tool_calls: bool, stop_sequences: tuple[str, ...]
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence). OpenAI does not say which stop sequence matched; vLLM-style
    upstreams put it in the choice's ``stop_reason``, and only then is it ``stop_sequence``."""
    if finish == "length":
        return "max_tokens", None
    if has_tool_calls or finish in ("tool_calls", "function_call"):
        # Agents loop on tool_use; some upstreams finish with "stop" after tool calls.
        return "tool_use", None
    if finish == "content_filter":
        return "refusal", None
    if isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return "end_turn", None


def anthropic_usage(usage: Any, context: MessageContext, output_text: str) -> dict[str, int]:
    """Anthropic usage from OpenAI usage; ``input_tokens`` excludes cache reads, as Anthropic's."""
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        cached = cached if isinstance(cached, int) and cached > 0 else 0
        completion = usage.get("completion_tokens")
        return {
            "input_tokens": max(usage["prompt_tokens"] - cached, 0),
            "output_tokens": completion if isinstance(completion, int) else 0,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0,
        }
    return {
        "input_tokens": context.input_tokens_estimate,
        "output_tokens": context.count_text(output_text),
    }


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, (str, bytes)) else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    if arguments not in (None, ""):
        log.warning("anthropic inbound: tool arguments are not a JSON object; sending {}")
    return {}


def _tool_use_block(call: Any) -> dict[str, Any] | None:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return None
    call_id = call.get("id")
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) and call_id else _tool_id(),
        "name": function["name"],
        "input": _tool_input(function.get("arguments")),
    }


def _tool_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


def to_anthropic_message(completion: Any, context: MessageContext) -> dict[str, Any]:
    """A ``message`` object from a ``chat.completion``; tolerant of sparse upstream bodies."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = _reasoning_of(message)
    if reasoning and context.thinking:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    counted = reasoning + (text if isinstance(text, str) else "")
    for call in message.get("tool_calls") or ():
        block = _tool_use_block(call)
        if block is not None:
            content.append(block)
            counted += block["name"] + orjson.dumps(block["input"]).decode()
    has_tools = any(block["type"] == "tool_use" for block in content)
    stop_reason, stop_sequence = stop_reason_of(
        choice.get("finish_reason"), choice.get("stop_reason"), has_tools, context.stop_sequences
    )
    usage = completion.get("usage") if isinstance(completion, dict) else None
    return {
        "id": context.message_id,
        "type": "message",
        "role": "assistant",
        "model": context.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(usage, context, counted),
    }


def _reasoning_of(message: dict[str, Any]) -> str:
    """Reasoning text under the usual extension names (DeepSeek/llama.cpp, newer vLLM)."""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


@dataclass(slots=True)
class _StreamState:
    started: bool = False
    finished: bool = False
    open_index: int | None = None  # Anthropic index of the block now open
    open_kind: str | None = None  # "text", "thinking" or "tool_use"
    next_index: int = 0
    tool_blocks: dict[int, int] = field(default_factory=dict)  # OpenAI tool index -> block
    finish_reason: Any = None
    matched_stop: Any = None
    usage: Any = None
    delivered: list[str] = field(default_factory=list)


class AnthropicStreamWriter:
    """Feed OpenAI SSE frames (bytes, any split), get Anthropic SSE event frames."""

    def __init__(self, context: MessageContext) -> None:
        self._context = context
        self._splitter = SseSplitter()
        self._state = _StreamState()

    @property
    def finished(self) -> bool:
        return self._state.finished

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for event in self._splitter.feed(data):
            if not self._state.finished:
                out.extend(self._on_payload(event.data))
        return out

    def close(self) -> list[bytes]:
        """The OpenAI stream ended; if it never finished properly, say so with an error event."""
        out: list[bytes] = []
        for event in self._splitter.flush():
            if not self._state.finished:
                out.extend(self._on_payload(event.data))
        if not self._state.finished:
            out.extend(
                self._error("api_error", "The upstream stream ended before it was complete.")
            )
        return out

    def _on_payload(self, payload: bytes) -> list[bytes]:
        if not payload:
            return []
        if payload == b"[DONE]":
            return self._finish()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("anthropic inbound: skipping an undecodable stream chunk")
            return []
        if not isinstance(chunk, dict):
            return []
        error = chunk.get("error")
        if error is not None and not chunk.get("choices"):
            return self._upstream_error(error)
        out = self._start()
        if chunk.get("usage"):
            self._state.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out.extend(self._on_choice(choice))
        return out

    def _start(self) -> list[bytes]:
        if self._state.started:
            return []
        self._state.started = True
        context = self._context
        message: dict[str, Any] = {
            "id": context.message_id,
            "type": "message",
            "role": "assistant",
            "model": context.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": context.input_tokens_estimate, "output_tokens": 0},
        }
        return [_event("message_start", {"type": "message_start", "message": message})]

    def _on_choice(self, choice: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = _reasoning_of(delta)
            if reasoning:
                out.extend(self._thinking(reasoning))
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.extend(self._text(text))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out.extend(self._tool_call(call))
        if choice.get("finish_reason"):
            self._state.finish_reason = choice["finish_reason"]
            self._state.matched_stop = choice.get("stop_reason")
        return out

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        state = self._state
        out = self._close_block()
        state.open_index, state.open_kind = state.next_index, kind
        state.next_index += 1
        start = {"type": "content_block_start", "index": state.open_index, "content_block": block}
        out.append(_event("content_block_start", start))
        return out

    def _close_block(self) -> list[bytes]:
        state = self._state
        if state.open_index is None:
            return []
        stop = {"type": "content_block_stop", "index": state.open_index}
        state.open_index, state.open_kind = None, None
        return [_event("content_block_stop", stop)]

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._state.open_kind != "text":
            out.extend(self._open("text", {"type": "text", "text": ""}))
        assert self._state.open_index is not None
        self._state.delivered.append(text)
        out.append(self._delta(self._state.open_index, {"type": "text_delta", "text": text}))
        return out

    def _thinking(self, text: str) -> list[bytes]:
        self._state.delivered.append(text)  # reasoning is output the upstream bills for
        if not self._context.thinking:
            return []
        out: list[bytes] = []
        if self._state.open_kind != "thinking":
            out.extend(
                self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            )
        assert self._state.open_index is not None
        delta = {"type": "thinking_delta", "thinking": text}
        out.append(self._delta(self._state.open_index, delta))
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        state = self._state
        position = call.get("index", 0)
        raw_function = call.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        out: list[bytes] = []
        if position not in state.tool_blocks:
            call_id = call.get("id")
            raw_name = function.get("name")
            name = raw_name if isinstance(raw_name, str) else ""
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call_id if isinstance(call_id, str) and call_id else _tool_id(),
                "name": name,
                "input": {},
            }
            out.extend(self._open("tool_use", block))
            assert state.open_index is not None
            state.tool_blocks[position] = state.open_index
            state.delivered.append(name)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            state.delivered.append(arguments)
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(self._delta(state.tool_blocks[position], delta))
        return out

    def _finish(self) -> list[bytes]:
        state = self._state
        out = self._start()
        out.extend(self._close_block())
        stop_reason, stop_sequence = stop_reason_of(
            state.finish_reason,
            state.matched_stop,
            bool(state.tool_blocks),
            self._context.stop_sequences,
        )
        usage = anthropic_usage(state.usage, self._context, "".join(state.delivered))
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        out.append(
            _event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        )
        out.append(_event("message_stop", {"type": "message_stop"}))
        state.finished = True
        return out

    def _upstream_error(self, error: Any) -> list[bytes]:
        message = "The upstream failed during the stream."
        code = None
        if isinstance(error, dict):
            # Already masked by the stream translator; masked again here so this path can
            # never carry an upstream's key or account ids, whatever produced the frame.
            message = redact_secrets(str(error.get("message") or message))
            code = error.get("code")
        kind = "timeout_error" if code == "upstream_timeout" else "api_error"
        return self._error(kind, message)

    def _error(self, kind: str, message: str) -> list[bytes]:
        self._state.finished = True
        payload = {"type": "error", "error": {"type": kind, "message": message}}
        return [_event("error", payload)]
