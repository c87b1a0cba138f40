"""A fake Anthropic Messages API (``POST /v1/messages``) on a real loopback socket.

Requests are checked the way the real API would reject them, and every violation is recorded
in ``violations`` and answered with Anthropic's own 400 ``invalid_request_error``:
``x-api-key`` and ``anthropic-version: 2023-06-01`` headers; the body must validate against the
official ``anthropic`` SDK's typed ``MessageCreateParams`` (materialised, so nested blocks are
checked too) with no unknown top-level fields; ``max_tokens`` present; roles alternating and
starting with ``user``; ``tool_result`` blocks first in their turn and answering the previous
turn's ``tool_use`` ids; tools defined whenever tool blocks appear.

Replies mirror the fake OpenAI upstream (same words, 11 prompt tokens) so one conformance
suite can assert the same results: tools present (and tool_choice not ``none``) -> a tool call
with ``{"city": "Paris"}``; ``max_tokens`` below the word count cuts the reply (stop_reason
``max_tokens``); a matching stop sequence ends it (``stop_sequence``). Request headers steer
failures: ``x-fake-truncate: 1`` cuts the stream, ``x-fake-stream-error: 1`` sends an
``error`` event before any output (``late``: after some text), ``x-fake-cache: 1`` reports
prompt-cache reads and writes.
``script`` queues canned HTTP answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from pydantic import TypeAdapter, ValidationError

from tests.fakes.openai_upstream import REPLY_WORDS, Scripted
from tests.fakes.server import serve_on_loopback

__all__ = ["FakeAnthropic", "AnthropicReceived", "UPSTREAM_KEY", "error_body"]

UPSTREAM_KEY = "sk-ant-api03-FAKE-anthropic-key-do-not-leak-0123456789"
PROMPT_TOKENS = 11
_ARG_PIECES = ['{"ci', 'ty": "Pa', 'ris"}']
_EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
_PARAMS: dict[bool, TypeAdapter[Any]] = {
    False: TypeAdapter(MessageCreateParamsNonStreaming),
    True: TypeAdapter(MessageCreateParamsStreaming),
}
# The SDK's TypedDicts ignore unknown keys, so the top level is checked against this list: the
# SDK's declared fields plus the classic sampling controls of the 2023-06-01 API.
_ALLOWED_TOP = set(MessageCreateParamsNonStreaming.__annotations__) | {
    "stream",
    "temperature",
    "top_p",
    "top_k",
}


@dataclass
class AnthropicReceived:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def error_body(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _materialise(value: Any) -> Any:
    """Pydantic validates ``Iterable`` fields lazily; iterate everything to force checks."""
    if isinstance(value, dict):
        return {k: _materialise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or isinstance(value, Iterator):
        return [_materialise(v) for v in value]
    return value


def _check_turns(body: dict[str, Any]) -> None:
    messages = body["messages"]
    expected = "user"
    pending: set[str] = set()
    uses_tools = False
    for index, message in enumerate(messages):
        if message["role"] != expected:
            raise ValueError(f"messages: roles must alternate, starting with user (at {index})")
        expected = "assistant" if expected == "user" else "user"
        blocks = message["content"]
        blocks = [{"type": "text", "text": blocks}] if isinstance(blocks, str) else blocks
        kinds = [b["type"] for b in blocks]
        first_other = next((i for i, k in enumerate(kinds) if k != "tool_result"), len(kinds))
        if "tool_result" in kinds[first_other:]:
            raise ValueError(f"messages.{index}: tool_result blocks must come first")
        results = {b["tool_use_id"] for b in blocks if b["type"] == "tool_result"}
        if pending and results != pending:
            raise ValueError(f"messages.{index}: tool_use ids without matching tool_result")
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
        uses_tools = uses_tools or bool(results) or bool(pending)
        for block in blocks:
            if block["type"] == "text" and not block["text"]:
                raise ValueError(f"messages.{index}: text content blocks must be non-empty")
    if uses_tools and not body.get("tools"):
        raise ValueError("Requests which include tool_use or tool_result blocks must define tools")


def check_messages_request(body: Any) -> None:
    """Raise ``ValueError`` describing the first way ``body`` is not a valid request."""
    if not isinstance(body, dict):
        raise ValueError("body must be an object")
    unknown = set(body) - _ALLOWED_TOP
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: Extra inputs are not permitted")
    try:
        _materialise(_PARAMS[bool(body.get("stream"))].validate_python(body))
    except ValidationError as exc:
        raise ValueError(f"invalid request: {str(exc)[:400]}") from None
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise ValueError("max_tokens: Field required")
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        raise ValueError("temperature: range: 0..1")
    _check_turns(body)


class FakeAnthropic:
    def __init__(self) -> None:
        self.received: list[AnthropicReceived] = []
        self.violations: list[str] = []
        self.script: list[Scripted] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeAnthropic:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _reject(self, status: int, kind: str, message: str) -> web.Response:
        if status == 400:
            self.violations.append(message)
        body = error_body(kind, message)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._reject(400, "invalid_request_error", "body is not JSON")
        self.received.append(AnthropicReceived(request.path, dict(request.headers), body))
        if request.headers.get("x-api-key") != UPSTREAM_KEY:
            return self._reject(401, "authentication_error", "invalid x-api-key")
        if request.headers.get("anthropic-version") != "2023-06-01":
            return self._reject(400, "invalid_request_error", "anthropic-version header")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._reject(400, "invalid_request_error", "content-type must be JSON")
        try:
            check_messages_request(body)
        except ValueError as exc:
            return self._reject(400, "invalid_request_error", f"FAKE: {exc}")
        if self.script:
            step = self.script.pop(0)
            if step.behaviour == "malformed":
                return web.Response(status=200, body=b"{not json", content_type="application/json")
            return web.Response(
                status=step.status, body=step.body or b"{}", headers=step.headers,
                content_type="application/json",
            )  # fmt: skip
        blocks, stop_reason, stop_sequence, output = _plan(body)
        usage = _usage(request.headers.get("x-fake-cache") == "1", output)
        if body.get("stream"):
            return await self._stream(request, body, blocks, (stop_reason, stop_sequence), usage)
        message = {
            "id": "msg_fake01",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }
        Message.model_validate(message)  # the fake answers in the SDK's own response shape
        return web.Response(body=orjson.dumps(message), content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        blocks: list[dict[str, Any]],
        stop: tuple[str, str | None],
        usage: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        truncate = request.headers.get("x-fake-truncate") == "1"
        fail = request.headers.get("x-fake-stream-error")  # "1": before output, "late": after
        start_usage = {**usage, "output_tokens": 1}
        message = {
            "id": "msg_fake01", "type": "message", "role": "assistant", "model": body["model"],
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage,
        }  # fmt: skip
        try:
            await response.write(_sse("message_start", {"message": message}))
            await response.write(_sse("ping", {}))
            err = {"type": "overloaded_error", "message": "Overloaded"}
            if fail == "1":
                await response.write(_sse("error", {"error": err}))
                return response
            sent = 0
            for index, block in enumerate(blocks):
                for event, data in _block_events(index, block):
                    await response.write(_sse(event, data))
                    sent += 1
                    if truncate and sent == 3:
                        return response
                    if fail == "late" and sent == 3:
                        await response.write(_sse("error", {"error": err}))
                        return response
            delta = {"stop_reason": stop[0], "stop_sequence": stop[1]}
            out_usage = {"output_tokens": usage["output_tokens"]}
            await response.write(_sse("message_delta", {"delta": delta, "usage": out_usage}))
            await response.write(_sse("message_stop", {}))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        return response


def _sse(event: str, data: dict[str, Any]) -> bytes:
    if event not in ("ping", "error"):
        # The fake's own output must be what the official SDK parses (catches fake drift).
        _EVENTS.validate_python({"type": event, **data})
    payload = orjson.dumps({"type": event, **data})
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def _block_events(index: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    if block["type"] == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        events.append(("content_block_start", {"index": index, "content_block": start}))
        for word in _split_words(block["text"]):
            delta = {"type": "text_delta", "text": word}
            events.append(("content_block_delta", {"index": index, "delta": delta}))
    elif block["type"] == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        events.append(("content_block_start", {"index": index, "content_block": start}))
        delta = {"type": "thinking_delta", "thinking": block["thinking"]}
        events.append(("content_block_delta", {"index": index, "delta": delta}))
        sig = {"type": "signature_delta", "signature": block["signature"]}
        events.append(("content_block_delta", {"index": index, "delta": sig}))
    else:
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        events.append(("content_block_start", {"index": index, "content_block": start}))
        for piece in ["", *_ARG_PIECES]:
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(("content_block_delta", {"index": index, "delta": delta}))
    events.append(("content_block_stop", {"index": index}))
    return events


def _split_words(text: str) -> list[str]:
    words: list[str] = []
    for word in REPLY_WORDS:
        if text.startswith(word):
            words.append(word)
            text = text[len(word) :]
    return [*words, text] if text else words


def _usage(cached: bool, output: int) -> dict[str, Any]:
    if cached:
        return {
            "input_tokens": 3,
            "cache_read_input_tokens": 6,
            "cache_creation_input_tokens": 2,
            "output_tokens": output,
        }
    return {
        "input_tokens": PROMPT_TOKENS,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "output_tokens": output,
    }


def _plan(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str | None, int]:
    """(content blocks, stop_reason, stop_sequence, output tokens) for a valid request."""
    blocks: list[dict[str, Any]] = []
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        blocks.append({"type": "thinking", "thinking": "Let me think.", "signature": "sig"})
    choice = body.get("tool_choice") or {"type": "auto"}
    if body.get("tools") and choice["type"] != "none":
        name = choice["name"] if choice["type"] == "tool" else body["tools"][0]["name"]
        call = {"type": "tool_use", "id": "toolu_fake01", "name": name, "input": {"city": "Paris"}}
        return [*blocks, call], "tool_use", None, 7
    words = list(REPLY_WORDS)
    stop_reason, stop_sequence = "end_turn", None
    if body["max_tokens"] < len(words):
        words, stop_reason = words[: body["max_tokens"]], "max_tokens"
    text = "".join(words)
    for sequence in body.get("stop_sequences") or ():
        if sequence in text:
            text, stop_reason, stop_sequence = (
                text[: text.index(sequence)],
                "stop_sequence",
                sequence,
            )
            words = [w for w in REPLY_WORDS if w in text]
    blocks.append({"type": "text", "text": text})
    return blocks, stop_reason, stop_sequence, len(words)
