"""Chat completions for models a channel serves only through the Responses API
(``channels[].responses_models``): sent as Responses requests, answered as chat completions,
whole and streamed, through the official SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from sluice.core import RelayCall
from sluice.errors import InvalidRequest
from sluice.providers.chat_via_responses import (
    ResponsesStreamTranslator,
    chat_as_responses_body,
    chat_from_response,
)
from tests.conftest import GatewayFactory
from tests.fakes.server import serve_on_loopback
from tests.openapi_schema import validate_openai
from tests.support import LoopThread

MODEL = "o1-pro"
TOOL = {"type": "function", "function": {"name": "weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
USAGE = {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 0},
         "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 4},
         "total_tokens": 42}  # fmt: skip


def _call(body: dict[str, Any], stream: bool = False, wants_usage: bool = False) -> RelayCall:
    return RelayCall("chat", "/chat/completions", body, orjson.dumps(body), MODEL, "o1-pro-2025",
                     stream, wants_usage)  # fmt: skip


def _response(output: list[dict[str, Any]], status: str = "completed",
              incomplete: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"id": "resp_abc", "object": "response", "created_at": 1700000000, "status": status,
            "model": "o1-pro-2025", "output": output, "usage": USAGE, "error": None,
            "incomplete_details": incomplete, "instructions": None, "metadata": {},
            "parallel_tool_calls": True, "temperature": 1.0, "tool_choice": "auto",
            "tools": [], "top_p": 1.0}  # fmt: skip


def _message(text: str) -> dict[str, Any]:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}  # fmt: skip


def _function_call() -> dict[str, Any]:
    return {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather",
            "arguments": '{"city":"Paris"}', "status": "completed"}  # fmt: skip


# --- pure translation ------------------------------------------------------------------------


def _validate_request(sent: dict[str, Any]) -> None:
    # The spec's input item union is ambiguous for a user message with content parts (it is
    # both an EasyInputMessage and an InputMessage): each item is checked against its own.
    validate_openai("CreateResponse", {**sent, "input": "-"})
    schemas = {"function_call": "FunctionToolCall",
               "function_call_output": "FunctionCallOutputItemParam"}  # fmt: skip
    for item in sent["input"]:
        validate_openai(schemas.get(item.get("type"), "EasyInputMessage"), item)


def test_a_chat_body_becomes_a_valid_responses_request() -> None:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image_url", "image_url": {
                                             "url": "https://x.test/a.png", "detail": "low"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "max_tokens": 50, "max_completion_tokens": 80, "reasoning_effort": "high",
        "temperature": 0.5, "user": "u1",
    }  # fmt: skip
    sent = orjson.loads(chat_as_responses_body(_call(body)))
    _validate_request(sent)
    assert sent["model"] == "o1-pro-2025" and sent["store"] is False
    assert sent["instructions"] == "Be brief.\n\nUse metric."
    image = {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"}
    assert sent["input"][0]["content"][1] == image
    assert sent["input"][1] == {"type": "function_call", "call_id": "call_1", "name": "weather",
                                "arguments": '{"city":"Paris"}'}  # fmt: skip
    assert sent["input"][2] == {"type": "function_call_output", "call_id": "call_1",
                                "output": "sunny"}  # fmt: skip
    assert sent["tools"][0]["name"] == "weather" and "function" not in sent["tools"][0]
    assert sent["tool_choice"] == {"type": "function", "name": "weather"}
    assert sent["text"]["format"] == {"type": "json_schema", "name": "w",
                                      "schema": {"type": "object"}}  # fmt: skip
    assert sent["max_output_tokens"] == 80 and sent["reasoning"] == {"effort": "high"}
    assert (sent["temperature"], sent["user"]) == (0.5, "u1")


@pytest.mark.parametrize(("field", "value"), [("n", 2), ("stop", ["\n"])])
def test_what_the_responses_api_lacks_is_refused_not_dropped(field: str, value: Any) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], field: value}
    with pytest.raises(InvalidRequest) as refused:
        chat_as_responses_body(_call(body))
    assert refused.value.param == field and refused.value.code == "unsupported_parameter"


@pytest.mark.parametrize(
    ("output", "incomplete", "finish"),
    [([_message("Sunny.")], None, "stop"), ([_function_call()], None, "tool_calls"),
     ([_message("Sun")], {"reason": "max_output_tokens"}, "length")],
)  # fmt: skip
def test_a_response_becomes_a_valid_chat_completion(
    output: list[dict[str, Any]], incomplete: dict[str, Any] | None, finish: str
) -> None:
    status = "incomplete" if incomplete else "completed"
    parsed = chat_from_response(orjson.dumps(_response(output, status, incomplete)), MODEL)
    chat = orjson.loads(parsed.body)
    validate_openai("CreateChatCompletionResponse", chat)
    assert chat["choices"][0]["finish_reason"] == finish
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 10}
    assert chat["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    assert (parsed.usage.prompt, parsed.usage.completion, parsed.usage.cached) == (30, 12, 10)  # type: ignore[union-attr]


def _events(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = _response([], "in_progress")
    events: list[dict[str, Any]] = [{"type": "response.created", "response": base}]
    for item in output:
        if item["type"] == "message":
            events.append({"type": "response.output_item.added", "output_index": 0,
                           "item": {**item, "content": [], "status": "in_progress"}})  # fmt: skip
            for piece in ("Sun", "ny."):
                events.append({"type": "response.output_text.delta", "item_id": "msg_1",
                               "output_index": 0, "content_index": 0, "delta": piece,
                               "logprobs": []})  # fmt: skip
        else:
            events.append({"type": "response.output_item.added", "output_index": 0,
                           "item": {**item, "arguments": ""}})  # fmt: skip
            for piece in ('{"city"', ':"Paris"}'):
                events.append({"type": "response.function_call_arguments.delta",
                               "item_id": "fc_1", "output_index": 0, "delta": piece})  # fmt: skip
    events.append({"type": "response.completed", "response": _response(output)})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


def test_a_response_stream_becomes_chat_chunks_split_anywhere() -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    translator = ResponsesStreamTranslator(_call(body, stream=True, wants_usage=True))
    raw = _sse(_events([_message("Sunny.")]))
    frames = [f for at in range(0, len(raw), 7) for f in translator.feed(raw[at : at + 7])]
    frames += translator.close()
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(f[6:]) for f in frames[:-1]]
    for chunk in chunks:
        validate_openai("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Sunny." and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 42
    assert translator.usage is not None and translator.usage.completion == 12


def test_a_stream_cut_short_or_failed_is_an_error_frame() -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    cut = ResponsesStreamTranslator(_call(body, stream=True))
    cut.feed(_sse(_events([_message("x")])[:3]))
    assert b"upstream_stream_truncated" in cut.close()[-1]
    failed = ResponsesStreamTranslator(_call(body, stream=True), secret="sk-chan-secret-1234")
    event = {"type": "response.failed", "response": {
        **_response([], "failed"), "error": {"code": "server_error",
                                             "message": "boom sk-chan-secret-1234"}}}  # fmt: skip
    frames = failed.feed(_sse([event]))
    assert failed.failure is not None and b"sk-chan-secret-1234" not in frames[0]


# --- end to end through the gateway ----------------------------------------------------------


@dataclass
class FakeResponsesUpstream:
    output: list[dict[str, Any]] = field(default_factory=lambda: [_message("Sunny.")])
    seen: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> FakeResponsesUpstream:
        app = web.Application()
        app.router.add_post("/v1/responses", self._responses)
        self.runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        _validate_request(body)  # a fake that only takes the real shape
        self.seen.append(body)
        if not body.get("stream"):
            answer = _response(self.output)
            validate_openai("Response", answer)
            return web.json_response(answer)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in _events(self.output):
            await response.write(_sse([event]))
            await asyncio.sleep(0)
        await response.write_eof()
        return response


@pytest.fixture
def responses_upstream(loop_thread: LoopThread) -> Iterator[FakeResponsesUpstream]:
    fake = loop_thread.run(FakeResponsesUpstream().start())
    yield fake
    loop_thread.run(fake.stop())


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_chat_for_a_responses_only_model(
    gateway_factory: GatewayFactory,
    responses_upstream: FakeResponsesUpstream,
    sdk: Any,
    stream: bool,
) -> None:
    channel = {"name": "oa", "type": "openai", "api_key": "sk-upstream-responses-1234567",
               "base_url": f"http://127.0.0.1:{responses_upstream.port}/v1",
               "models": ["o1-pro", "gpt-4o"], "responses_models": ["o1-pro*"]}  # fmt: skip
    gateway = gateway_factory(
        [channel], pricing={"overrides": {"o1-pro": {"input": 150.0, "output": 600.0}}}
    )
    key = gateway.create_key("r", budget_micro=100_000_000)
    client = sdk(gateway, key)
    messages: Any = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        options: Any = {"include_usage": True}
        chunks = list(client.chat.completions.create(
            model=MODEL, messages=messages, stream=True, stream_options=options))  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
    else:
        completion = client.chat.completions.create(model=MODEL, messages=messages)
        validate_openai("CreateChatCompletionResponse", completion.to_dict())
        text, usage = completion.choices[0].message.content, completion.usage
    assert text == "Sunny." and usage is not None and usage.prompt_tokens == 30
    [sent] = responses_upstream.seen
    assert sent["input"] == [{"role": "user", "content": "Weather in Paris?"}]
    assert sent["stream"] is stream
    gateway.flush()
    [row] = gateway.usage_rows(key)
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (30, 10, 12)
    # 20 plain input tokens at $150/M, 10 cached (no cached price: input's), 12 at $600/M.
    assert row["cost_micro"] == 30 * 150 + 12 * 600
    started = time.monotonic()
    responses_upstream.output = [_function_call()]
    tool_call = client.chat.completions.create(model=MODEL, messages=messages, tools=[TOOL])
    assert time.monotonic() - started < 10
    call = tool_call.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1", "weather", '{"city":"Paris"}')  # fmt: skip
    assert tool_call.choices[0].finish_reason == "tool_calls"
