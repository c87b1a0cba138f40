"""OpenAI chat completion chunks -> the Responses API event stream (pure, incremental, no I/O).

Fed the decoded chunks of a chat stream one at a time (``feed_chunk``), then told the upstream
finished (``done``, at ``[DONE]``) or just stopped (``close``), ``ResponsesStreamWriter`` emits
the SSE frames (``event: <type>\\ndata: {...}\\n\\n``) a Responses client expects, each with its
``sequence_number``:

``response.created``, ``response.in_progress``; per message item ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``… (``response.refusal.delta``…
for a refusal part), and at its end ``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``; per tool call a ``function_call`` item with
``response.function_call_arguments.delta``… and ``.done``; then ``response.completed`` (or
``response.incomplete`` when the token limit cut the answer) with usage, or ``response.failed``
when the upstream failed or the stream ended early. The last response object is kept in
``response`` for storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.protocol.responses_request import new_item_id
from sluice.protocol.responses_response import (
    ResponseContext,
    function_call_item,
    message_item,
    output_text_part,
    response_object,
    response_status,
    response_usage,
)

__all__ = ["ResponsesStreamWriter", "sse_event"]

_TRUNCATED = "The upstream stream ended before it was complete."


def sse_event(payload: dict[str, Any]) -> bytes:
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _identity(text: str) -> str:
    return text


@dataclass(slots=True)
class _Part:
    kind: str  # "output_text" or "refusal"
    index: int  # content_index
    chunks: list[str] = field(default_factory=list)

    @property
    def value(self) -> str:
        return "".join(self.chunks)

    def final(self) -> dict[str, Any]:
        if self.kind == "refusal":
            return {"type": "refusal", "refusal": self.value}
        return output_text_part(self.value)


@dataclass(slots=True)
class _Message:
    output_index: int
    item_id: str
    parts: dict[str, _Part] = field(default_factory=dict)  # by kind


@dataclass(slots=True)
class _Call:
    output_index: int
    item_id: str
    call_id: str
    name: str
    extra_content: dict[str, Any] | None = None  # provider data replayed with the call
    arguments: list[str] = field(default_factory=list)
    closed: bool = False


class ResponsesStreamWriter:
    """One per response: feed chat chunks (dicts), get Responses SSE frames."""

    def __init__(self, context: ResponseContext, redact: Callable[[str], str] = _identity) -> None:
        self._context = context
        self._redact = redact  # applied to upstream error messages before they are shown
        self._sequence = 0
        self._started = False
        self.finished = False
        self._output: list[dict[str, Any]] = []  # final items, by output index, once closed
        self._message: _Message | None = None  # the message item now open
        self._calls: dict[int, _Call] = {}  # chat tool-call index -> function_call item
        self._finish_reason: Any = None
        self._usage: Any = None
        self._delivered: list[str] = []  # text forwarded, for local counting
        self.response: dict[str, Any] | None = None  # the last response object sent

    # --- input -----------------------------------------------------------------------------

    def feed_chunk(self, chunk: Any) -> list[bytes]:
        """One decoded ``chat.completion.chunk`` (or an error frame's payload)."""
        if self.finished or not isinstance(chunk, dict):
            return []
        error = chunk.get("error")
        if error is not None and not chunk.get("choices"):
            return self._fail(error)
        out = self._start()
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out.extend(self._on_choice(choice))
        return out

    def done(self) -> list[bytes]:
        """The upstream's ``[DONE]``: close every item and send the final response."""
        if self.finished:
            return []
        out = self._start()
        out.extend(self._close_message())
        for call in self._calls.values():
            out.extend(self._close_call(call))
        status, reason = response_status(self._finish_reason)
        usage = response_usage(self._usage, self._context, "".join(self._delivered))
        response = response_object(
            self._context, status, self._final_output(), usage=usage, incomplete_reason=reason
        )
        self.response = response
        self.finished = True
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event({"type": kind, "response": response}))
        return out

    def close(self) -> list[bytes]:
        """The stream ended; without a ``[DONE]`` first, the response failed."""
        if self.finished:
            return []
        return self._fail({"message": _TRUNCATED, "code": "upstream_stream_truncated"})

    # --- events ----------------------------------------------------------------------------

    def _event(self, payload: dict[str, Any]) -> bytes:
        payload["sequence_number"] = self._sequence
        self._sequence += 1
        return sse_event(payload)

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        response = response_object(self._context, "in_progress", [])
        return [
            self._event({"type": "response.created", "response": response}),
            self._event({"type": "response.in_progress", "response": response}),
        ]

    def _on_choice(self, choice: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str):
                self._delivered.append(reasoning)  # billed output, not shown
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.extend(self._text("output_text", text))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                out.extend(self._text("refusal", refusal))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out.extend(self._tool_call(call))
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        return out

    def _reserve_index(self) -> int:
        self._output.append({})  # filled when the item closes
        return len(self._output) - 1

    def _open_message(self) -> tuple[_Message, list[bytes]]:
        if self._message is not None:
            return self._message, []
        message = _Message(self._reserve_index(), new_item_id("message"))
        self._message = message
        item = message_item(message.item_id, None, None, "in_progress")
        added = {
            "type": "response.output_item.added",
            "output_index": message.output_index,
            "item": item,
        }
        return message, [self._event(added)]

    def _text(self, kind: str, text: str) -> list[bytes]:
        message, out = self._open_message()
        self._delivered.append(text)
        part = message.parts.get(kind)
        if part is None:
            part = message.parts[kind] = _Part(kind, len(message.parts))
            added = {
                "type": "response.content_part.added",
                "item_id": message.item_id,
                "output_index": message.output_index,
                "content_index": part.index,
                "part": part.final(),
            }
            out.append(self._event(added))
        part.chunks.append(text)
        payload: dict[str, Any] = {
            "type": f"response.{kind}.delta",
            "item_id": message.item_id,
            "output_index": message.output_index,
            "content_index": part.index,
            "delta": text,
        }
        if kind == "output_text":
            payload["logprobs"] = []
        out.append(self._event(payload))
        return out

    def _close_message(self) -> list[bytes]:
        message = self._message
        if message is None:
            return []
        self._message = None
        out: list[bytes] = []
        where = {"item_id": message.item_id, "output_index": message.output_index}
        for part in message.parts.values():
            if part.kind == "output_text":
                done = {
                    "type": "response.output_text.done",
                    **where,
                    "content_index": part.index,
                    "text": part.value,
                    "logprobs": [],
                }
            else:
                done = {
                    "type": "response.refusal.done",
                    **where,
                    "content_index": part.index,
                    "refusal": part.value,
                }
            out.append(self._event(done))
            part_done = {
                "type": "response.content_part.done",
                **where,
                "content_index": part.index,
                "part": part.final(),
            }
            out.append(self._event(part_done))
        incomplete = response_status(self._finish_reason)[0] == "incomplete"
        status = "incomplete" if incomplete else "completed"
        item = message_item(message.item_id, None, None, status)
        item["content"] = [part.final() for part in message.parts.values()]
        self._output[message.output_index] = item
        item_done = {
            "type": "response.output_item.done",
            "output_index": message.output_index,
            "item": item,
        }
        out.append(self._event(item_done))
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        position = call.get("index", 0)
        position = position if isinstance(position, int) else 0
        raw_function = call.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        out: list[bytes] = []
        item = self._calls.get(position)
        if item is None:
            out.extend(self._close_message())  # text before a call ends its message item
            call_id, name, extra = call.get("id"), function.get("name"), call.get("extra_content")
            item = _Call(
                self._reserve_index(),
                new_item_id("function_call"),
                call_id if isinstance(call_id, str) and call_id else new_item_id("call"),
                name if isinstance(name, str) else "",
                extra if isinstance(extra, dict) else None,
            )
            self._calls[position] = item
            self._delivered.append(item.name)
            snapshot = function_call_item(
                item.item_id, item.call_id, item.name, "", "in_progress", item.extra_content
            )
            added = {
                "type": "response.output_item.added",
                "output_index": item.output_index,
                "item": snapshot,
            }
            out.append(self._event(added))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and not item.closed:
            item.arguments.append(arguments)
            self._delivered.append(arguments)
            delta = {
                "type": "response.function_call_arguments.delta",
                "item_id": item.item_id,
                "output_index": item.output_index,
                "delta": arguments,
            }
            out.append(self._event(delta))
        return out

    def _close_call(self, call: _Call) -> list[bytes]:
        if call.closed:
            return []
        call.closed = True
        arguments = "".join(call.arguments)
        done = {
            "type": "response.function_call_arguments.done",
            "item_id": call.item_id,
            "name": call.name,
            "output_index": call.output_index,
            "arguments": arguments,
        }
        item = function_call_item(
            call.item_id, call.call_id, call.name, arguments, "completed", call.extra_content
        )
        self._output[call.output_index] = item
        item_done = {
            "type": "response.output_item.done",
            "output_index": call.output_index,
            "item": item,
        }
        return [self._event(done), self._event(item_done)]

    def _final_output(self) -> list[dict[str, Any]]:
        return [item for item in self._output if item]

    def _fail(self, error: Any) -> list[bytes]:
        out = self._start()
        message = "The upstream failed during the stream."
        code: Any = None
        if isinstance(error, dict):
            message = self._redact(str(error.get("message") or message))
            code = error.get("code")
        # Response errors carry one of OpenAI's codes; the gateway's own code is not one.
        limited = code in ("rate_limit_exceeded", "upstream_rate_limited")
        kind = "rate_limit_exceeded" if limited else "server_error"
        response = response_object(
            self._context,
            "failed",
            self._final_output(),
            usage=response_usage(self._usage, self._context, "".join(self._delivered)),
            error={"code": kind, "message": message},
        )
        self.response = response
        self.finished = True
        out.append(self._event({"type": "response.failed", "response": response}))
        return out
