"""Chat completions over OpenAI's Responses API, for models served only there.

Some models (``o1-pro``, ``codex-*``, ``computer-use-*``) answer only ``POST /v1/responses``.
A channel lists them in ``responses_models``; a chat completions call for one is sent as a
Responses request and its answer, whole or streamed, comes back as a chat completion. Pure
translation: no I/O.

Request: system and developer messages become ``instructions``; user and assistant messages
become input messages (text, ``input_image`` parts), assistant tool calls ``function_call``
items, tool messages ``function_call_output`` items; function tools are flattened;
``response_format`` becomes ``text.format``; ``max_tokens``/``max_completion_tokens`` become
``max_output_tokens``; ``reasoning_effort`` becomes ``reasoning.effort``; ``store`` is false
unless the client asked (chat completions are not stored by default). ``n`` > 1 and ``stop``
have no Responses equivalent and are refused with a 400 rather than silently ignored.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from sluice.core import ParsedResponse, RelayCall, UsageTokens
from sluice.errors import InvalidRequest, UpstreamBadResponse
from sluice.providers.base import DONE_FRAME, sse_frame
from sluice.providers.event_translator import EventTranslator
from sluice.providers.failures import (
    stream_error,
    stream_truncated,
)

__all__ = ["ResponsesStreamTranslator", "chat_as_responses_body", "chat_from_response"]

# Chat fields with the same name and meaning in a Responses request.
_SAME_FIELDS = ("temperature", "top_p", "parallel_tool_calls", "user", "metadata",
                "service_tier", "prompt_cache_key", "safety_identifier")  # fmt: skip


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{param}' is not supported for this model: {why}",
        param=param,
        code="unsupported_parameter",
    )


def _content_parts(content: Any) -> Any:
    """Message content as a Responses input: a string as is, parts as input parts."""
    if isinstance(content, str) or content is None:
        return content or ""
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            item: dict[str, Any] = {"type": "input_image", "image_url": url}
            if isinstance(image, dict) and image.get("detail"):
                item["detail"] = image["detail"]
            parts.append(item)
        else:
            raise _refuse("messages", f"content parts of type '{kind}' cannot be translated")
    return parts


def _text_of(content: Any) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    return "".join(
        str(part.get("text") or part.get("refusal") or "")
        for part in content
        if isinstance(part, dict)
    )


def _input_items(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            instructions.append(_text_of(content))
        elif role == "tool":
            output = content if isinstance(content, str) else orjson.dumps(content).decode()
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"),
                          "output": output})  # fmt: skip
        elif role == "user":
            items.append({"role": role, "content": _content_parts(content)})
        elif role == "assistant":
            # Earlier answers go back as text: the Responses API takes assistant input as a
            # string or output items with ids it issued, which a chat history does not have.
            if content:
                items.append({"role": role, "content": _text_of(content)})
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"),
                              "name": function.get("name"),
                              "arguments": function.get("arguments") or "{}"})  # fmt: skip
        else:
            raise _refuse("messages", f"the role '{role}' cannot be translated")
    return instructions, items


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _refuse("tools", "only function tools can be translated")
        function = tool.get("function") or {}
        # Chat's default is not strict, the Responses API's is: say it.
        item = {"type": "function", "name": function.get("name"),
                "parameters": function.get("parameters"),
                "strict": bool(function.get("strict", False))}  # fmt: skip
        if "description" in function:
            item["description"] = function["description"]
        flat.append(item)
    return flat


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    return choice


def _text_format(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = response_format.get("json_schema") or {}
        return {"type": "json_schema", **schema}
    if kind in ("json_object", "text"):
        return {"type": kind}
    return None


def chat_as_responses_body(call: RelayCall) -> bytes:
    """The Responses request for a chat completions call (model: the upstream's name)."""
    body = call.body
    if (body.get("n") or 1) > 1:
        raise _refuse("n", "the Responses API returns one answer per request")
    if body.get("stop") is not None:
        raise _refuse("stop", "the Responses API has no stop sequences")
    instructions, items = _input_items(body.get("messages") or [])
    store = bool(body.get("store", False))
    out: dict[str, Any] = {"model": call.upstream_model, "input": items, "store": store,
                           "stream": call.stream}  # fmt: skip
    if instructions:
        out["instructions"] = "\n\n".join(instructions)
    for name in _SAME_FIELDS:
        if body.get(name) is not None:
            out[name] = body[name]
    cap = max(body.get("max_tokens") or 0, body.get("max_completion_tokens") or 0)
    if cap:
        out["max_output_tokens"] = cap
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    text_format = _text_format(body.get("response_format"))
    if text_format is not None:
        out["text"] = {"format": text_format}
    if body.get("reasoning_effort"):
        out["reasoning"] = {"effort": body["reasoning_effort"]}
    return orjson.dumps(out)


def _usage(usage: Any) -> UsageTokens | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return UsageTokens(
        prompt=int(usage.get("input_tokens") or 0),
        completion=int(usage.get("output_tokens") or 0),
        cached=int(cached or 0),
    )


def _chat_usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}  # fmt: skip
    details = usage.get("input_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens"):
        out["prompt_tokens_details"] = {"cached_tokens": details["cached_tokens"]}
    reasoning = usage.get("output_tokens_details")
    if isinstance(reasoning, dict) and reasoning.get("reasoning_tokens"):
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning["reasoning_tokens"]}
    return out


def _finish_reason(response: dict[str, Any], has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if reason == "max_output_tokens":
        return "length"
    if reason == "content_filter":
        return "content_filter"
    return "stop"


def chat_from_response(body: bytes, model: str) -> ParsedResponse:
    """A whole Responses answer -> a chat completion."""
    try:
        response = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse("The upstream returned a body that is not JSON.") from None
    if not isinstance(response, dict) or not isinstance(response.get("output"), list):
        raise UpstreamBadResponse("The upstream response has no output.")
    text: list[str] = []
    refusal: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for item in response["output"]:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    text.append(part.get("text", ""))
                elif part.get("type") == "refusal":
                    refusal.append(part.get("refusal", ""))
        elif item.get("type") == "function_call":
            tool_calls.append({"id": item.get("call_id"), "type": "function",
                               "function": {"name": item.get("name"),
                                            "arguments": item.get("arguments", "")}})  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None,
                               "refusal": "".join(refusal) if refusal else None}  # fmt: skip
    if tool_calls:
        message["tool_calls"] = tool_calls
    chat: dict[str, Any] = {
        "id": "chatcmpl-" + str(response.get("id", "")).removeprefix("resp_"),
        "object": "chat.completion",
        "created": int(response.get("created_at") or time.time()),
        "model": response.get("model") or model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish_reason(response, bool(tool_calls))}],
    }  # fmt: skip
    usage = _chat_usage(response.get("usage"))
    if usage is not None:
        chat["usage"] = usage
    return ParsedResponse(body=orjson.dumps(chat), usage=_usage(response.get("usage")))


class ResponsesStreamTranslator(EventTranslator):
    """Responses streaming events -> chat completion chunks (``core.StreamTranslator``).

    ``response.created`` opens the stream (the role chunk); text and refusal deltas become
    content and refusal deltas; a ``function_call`` output item opens a ``tool_calls`` entry
    and its argument deltas follow; ``response.completed`` / ``response.incomplete`` end it
    with the finish reason, then the usage chunk if the client asked, then ``[DONE]``;
    ``response.failed`` and ``error`` events end it with an error frame.
    """

    def __init__(self, call: RelayCall, secret: str = "") -> None:
        super().__init__(call.max_event_bytes)
        self._model = call.upstream_model
        self._wants_usage = call.client_wants_usage
        self._secret = secret
        self._id = "chatcmpl-responses"
        self._created = int(time.time())
        self._tool_index: dict[str, int] = {}  # output item id -> tool_calls index

    def close(self) -> list[bytes]:
        if self._done:
            return []
        frames: list[bytes] = []
        for event in self._splitter.flush():
            frames += self._event(event.data)
        if self._done:
            return frames
        return [*frames, self._fail(stream_truncated())]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse_frame(orjson.dumps({"id": self._id, "object": "chat.completion.chunk",
                                       "created": self._created, "model": self._model,
                                       "choices": [choice]}))  # fmt: skip

    def _event(self, payload: bytes) -> list[bytes]:
        if not payload or payload == b"[DONE]":
            return []
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "response.created":
            response = event.get("response") or {}
            self._id = "chatcmpl-" + str(response.get("id", "")).removeprefix("resp_")
            self._created = int(response.get("created_at") or self._created)
            self._model = response.get("model") or self._model
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "response.output_text.delta":
            self._delivered.append(event.get("delta", ""))
            return [self._chunk({"content": event.get("delta", "")})]
        if kind == "response.refusal.delta":
            return [self._chunk({"refusal": event.get("delta", "")})]
        if kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") != "function_call":
                return []
            index = self._tool_index[str(item.get("id"))] = len(self._tool_index)
            self._delivered.append(item.get("name") or "")
            call = {"index": index, "id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": ""}}  # fmt: skip
            return [self._chunk({"tool_calls": [call]})]
        if kind == "response.function_call_arguments.delta":
            index = self._tool_index.get(str(event.get("item_id")), 0)
            self._delivered.append(event.get("delta", ""))
            delta = {"index": index, "function": {"arguments": event.get("delta", "")}}
            return [self._chunk({"tool_calls": [delta]})]
        if kind in ("response.completed", "response.incomplete"):
            return self._end(event.get("response") or {})
        if kind in ("response.failed", "error"):
            source = event.get("response", {}).get("error") if kind == "response.failed" else event
            message = (source or {}).get("message") or "unknown error"
            return [self._fail(stream_error(message, "upstream_stream_error", self._secret))]
        return []

    def _end(self, response: dict[str, Any]) -> list[bytes]:
        self._done = True
        self._usage = _usage(response.get("usage"))
        frames = [self._chunk({}, _finish_reason(response, bool(self._tool_index)))]
        usage = _chat_usage(response.get("usage"))
        if self._wants_usage and usage is not None:
            frames.append(sse_frame(orjson.dumps({"id": self._id, "object": "chat.completion.chunk",
                                                  "created": self._created, "model": self._model,
                                                  "choices": [], "usage": usage})))  # fmt: skip
        return [*frames, DONE_FRAME]
