"""OpenAI's own ``POST /v1/responses`` for the fake OpenAI upstream (the pass-through tests).

Answers like the real API: a ``response`` object, or its event stream (named SSE events with
``sequence_number``, ending with ``response.completed`` and no ``[DONE]``). Checks what the real
API would refuse: ``stream_options.include_usage`` (a chat-only option) and a
``previous_response_id`` it never issued, each a 400 in OpenAI's shape. Responses it created are
remembered, so chains work; the reply text and usage mirror the chat fake's.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web

__all__ = ["FakeResponsesApi"]

INPUT_TOKENS = 13


def _error(message: str, param: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": code}}  # fmt: skip
    return web.Response(status=400, body=orjson.dumps(body), content_type="application/json")


class FakeResponsesApi:
    def __init__(self, words: list[str]) -> None:
        self.words = words  # the reply, one delta per word
        self.created: dict[str, dict[str, Any]] = {}

    def response(self, body: dict[str, Any], status: str, output: list[Any]) -> dict[str, Any]:
        usage = None
        if status != "in_progress":
            words = len(self.words)
            usage = {"input_tokens": INPUT_TOKENS,
                     "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                     "output_tokens": words, "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": INPUT_TOKENS + words}  # fmt: skip
        response: dict[str, Any] = {
            "id": f"resp_fake{uuid.uuid4().hex[:12]}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "model": body.get("model"),
            "output": output,
            "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": True,
            "metadata": body.get("metadata") or {},
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "previous_response_id": body.get("previous_response_id"),
        }
        if usage is not None:
            response["usage"] = usage
        return response

    def refused(self, body: dict[str, Any]) -> web.Response | None:
        options = body.get("stream_options")
        if isinstance(options, dict) and "include_usage" in options:
            return _error("Unknown parameter: 'stream_options.include_usage'.",
                          "stream_options.include_usage", "unknown_parameter")  # fmt: skip
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.created:
            return _error(f"Previous response with id '{previous}' not found.",
                          "previous_response_id", "previous_response_not_found")  # fmt: skip
        return None

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        refused = self.refused(body)
        if refused is not None:
            return refused
        text = "".join(self.words)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        message = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:12]}", "status": "completed",
                   "role": "assistant", "content": [part]}  # fmt: skip
        final = self.response(body, "completed", [message])
        self.created[final["id"]] = final
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(final), content_type="application/json")
        stream = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await stream.prepare(request)
        started = {**final, "status": "in_progress", "output": []}
        started.pop("usage")
        item = {**message, "status": "in_progress", "content": []}
        where = {"item_id": message["id"], "output_index": 0}
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.content_part.added", **where, "content_index": 0, "part": empty},
            *({"type": "response.output_text.delta", **where, "content_index": 0, "delta": word,
               "logprobs": []} for word in self.words),
            {"type": "response.output_text.done", **where, "content_index": 0, "text": text,
             "logprobs": []},
            {"type": "response.content_part.done", **where, "content_index": 0,
             "part": message["content"][0]},
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            {"type": "response.completed", "response": final},
        ]  # fmt: skip
        cut = request.headers.get("x-fake-truncate") == "1"
        for number, event in enumerate(events[:5] if cut else events):
            event["sequence_number"] = number
            frame = f"event: {event['type']}\ndata: ".encode() + orjson.dumps(event) + b"\n\n"
            await stream.write(frame)
        return stream
