"""The official OpenAI SDK's Responses API against Sluice, served by chat channels through
translation: an OpenAI-compatible fake and a fake Anthropic API (which refuses what the real one
would). Every response body and streamed event is validated against the OpenAPI spec, the
fakes record what the upstream was asked, and usage rows show what was billed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import (
    FunctionToolParam,
    Response,
    ResponseFunctionToolCall,
    ResponseInputParam,
    ResponseOutputMessage,
    ToolParam,
)

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.anthropic_upstream import UPSTREAM_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import UPSTREAM_KEY as GEMINI_KEY
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI, Scripted
from tests.openapi_schema import validate_openai
from tests.protocol.response_events import validate_frames
from tests.support import Gateway, LoopThread

SdkFactory = Callable[..., openai.OpenAI]
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}


def claude_channel(fake: FakeAnthropic) -> dict[str, Any]:
    return {"name": "claude", "type": "anthropic", "base_url": fake.base_url,
            "api_key": ANTHROPIC_KEY, "models": ["test-claude"]}  # fmt: skip


@pytest.fixture
def both(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> Gateway:
    """One gateway: test-model on the OpenAI-compatible fake, test-claude on the Anthropic one."""
    channels = [openai_channel(fake_openai, models=["test-model"]), claude_channel(fake_anthropic)]
    return gateway_factory(channels)


def create(client: openai.OpenAI, **params: Any) -> tuple[Response, dict[str, Any]]:
    """``responses.create`` through the SDK, with the raw body checked against the spec."""
    raw = client.responses.with_raw_response.create(**params)
    body: dict[str, Any] = orjson.loads(raw.content)
    validate_openai("Response", body)
    return raw.parse(), body


def sse_post(gateway: Gateway, key: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed create on the wire: every event spec-valid, named and numbered in order."""
    with httpx.Client(timeout=30) as http:
        reply = http.post(
            f"{gateway.base_url}/responses",
            json={**payload, "stream": True},
            headers={"authorization": f"Bearer {key}"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/event-stream")
    return validate_frames([reply.content])


# --- create ----------------------------------------------------------------------------------


def test_create_translates_and_bills(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = gateway.create_key("resp", budget_micro=10_000_000)
    client = sdk(gateway, key)
    response, body = create(
        client,
        model="test-model",
        instructions="You are terse.",
        input="hi",
        temperature=0.5,
        max_output_tokens=100,
        metadata={"team": "a"},
    )
    assert response.output_text == "Hello from the fake upstream!"
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.model == "test-model" and response.instructions == "You are terse."
    assert response.metadata == {"team": "a"} and response.temperature == 0.5
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 6)
    assert response.usage.total_tokens == 17
    (item,) = response.output
    assert isinstance(item, ResponseOutputMessage) and item.status == "completed"
    sent = fake_openai.received[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hi"},
        ],
        "temperature": 0.5,
        "max_completion_tokens": 100,
    }
    assert body["usage"]["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    rows = gateway.usage_rows(key)
    assert len(rows) == 1
    # 11 prompt tokens at $1/M + 6 completion tokens at $2/M = 23 micro-dollars
    assert rows[0]["cost_micro"] == 23 and rows[0]["status"] == 200
    assert rows[0]["endpoint"] == "chat" and rows[0]["stream"] is False


def test_stream_helper_text_and_final_response(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = gateway.create_key("stream", budget_micro=10_000_000)
    client = sdk(gateway, key)
    with client.responses.stream(model="test-model", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello from the fake upstream!"
    assert final.output_text == "Hello from the fake upstream!"
    assert final.status == "completed" and final.usage is not None
    assert final.usage.output_tokens == 6 and final.usage.input_tokens == 11
    upstream = fake_openai.received[-1].body
    assert upstream["stream"] is True and upstream["stream_options"] == {"include_usage": True}
    rows = gateway.usage_rows(key)
    assert rows[0]["stream"] is True and rows[0]["status"] == 200
    assert rows[0]["completion_tokens"] == 6 and rows[0]["cost_micro"] == 23
    # The streamed response was stored before its last event: retrievable at once.
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text and stored.status == "completed"


def test_create_stream_true_events_are_spec_valid(gateway: Gateway, sdk: SdkFactory) -> None:
    key = gateway.create_key("raw-stream")
    kinds = [e.type for e in sdk(gateway, key).responses.create(
        model="test-model", input="hi", stream=True)]  # fmt: skip
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]  # fmt: skip
    assert kinds[-1] == "response.completed"
    events = sse_post(gateway, key, {"model": "test-model", "input": "hi"})
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["output_tokens"] == 6


def test_function_tool_round_trip_with_previous_response_id(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = gateway.create_key("tools", budget_micro=10_000_000)
    client = sdk(gateway, key)
    first, _ = create(client, model="test-model", input="Weather in Paris?", tools=[WEATHER],
                      tool_choice="required")  # fmt: skip
    (call,) = first.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "get_weather" and call.arguments == '{"city": "Paris"}'
    assert call.call_id == "call_0" and call.id is not None and call.id.startswith("fc_")
    upstream = fake_openai.received[-1].body
    assert upstream["tools"] == [
        {"type": "function",
         "function": {"name": "get_weather", "parameters": WEATHER["parameters"],
                      "description": "Weather for a city.", "strict": True}}
    ]  # fmt: skip
    assert upstream["tool_choice"] == "required"

    output: ResponseInputParam = [
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"}
    ]
    second, body = create(client, model="test-model", previous_response_id=first.id,
                          input=output, tools=[WEATHER], tool_choice="none")  # fmt: skip
    assert second.output_text == "Hello from the fake upstream!"
    assert body["previous_response_id"] == first.id
    assert fake_openai.received[-1].body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "18C, sunny"},
    ]  # fmt: skip
    # The second response's items: its whole context (the first turn and its call, the output).
    raw_items = client.responses.input_items.with_raw_response.list(second.id, order="asc")
    validate_openai("ResponseItemList", orjson.loads(raw_items.content))
    items = raw_items.parse()
    assert [item.type for item in items.data] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert len(gateway.usage_rows(key)) == 2


def test_stateless_tool_round_trip_streamed(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    """The client replays the items itself (store=False): streamed call, then its output."""
    key = gateway.create_key("stateless")
    client = sdk(gateway, key)
    with client.responses.stream(model="test-model", input="Weather?", tools=[WEATHER],
                                 store=False) as stream:  # fmt: skip
        arguments = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert "".join(arguments) == '{"city": "Paris"}'
    (call,) = final.output
    assert isinstance(call, ResponseFunctionToolCall) and call.arguments == '{"city": "Paris"}'
    replay: ResponseInputParam = [
        {"role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
    ]  # fmt: skip
    answer, _ = create(client, model="test-model", input=replay, store=False)
    assert answer.output_text == "Hello from the fake upstream!"
    assert [m["role"] for m in fake_openai.received[-1].body["messages"]] == [
        "user", "assistant", "tool"]  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(final.id)  # store=False: nothing kept


# --- an Anthropic channel --------------------------------------------------------------------


def test_anthropic_channel_tool_round_trip_and_previous_response(
    both: Gateway, fake_anthropic: FakeAnthropic, sdk: SdkFactory
) -> None:
    key = both.create_key("claude", budget_micro=10_000_000)
    client = sdk(both, key)
    first, _ = create(
        client, model="test-claude", instructions="Use tools.", input="Weather in Paris?",
        tools=[WEATHER], max_output_tokens=200,
    )  # fmt: skip
    (call,) = first.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.call_id == "toolu_fake01" and orjson.loads(call.arguments) == {"city": "Paris"}
    sent = fake_anthropic.received[-1].body
    assert sent["system"] == "Use tools." and sent["max_tokens"] == 200
    assert sent["tools"][0]["name"] == "get_weather"

    output: ResponseInputParam = [
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"}
    ]
    second, _ = create(client, model="test-claude", previous_response_id=first.id, input=output,
                       tools=[WEATHER], tool_choice="none")  # fmt: skip
    assert second.output_text == "Hello from the fake upstream!"
    messages = fake_anthropic.received[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][0]["type"] == "tool_use"
    assert messages[2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_fake01",
                                         "content": "18C, sunny"}  # fmt: skip
    assert "system" not in fake_anthropic.received[-1].body  # instructions are not carried over

    # Anthropic refuses tool blocks in a request without tools: like OpenAI, the gateway does
    # not carry tools over from the previous response, so the client sends them again.
    third, _ = create(client, model="test-claude", previous_response_id=second.id,
                      input="And tomorrow?", tools=[WEATHER], tool_choice="none")  # fmt: skip
    assert third.output_text
    assert len(fake_anthropic.received[-1].body["messages"]) == 5  # the whole chain, then this
    rows = both.usage_rows(key)
    assert [r["channel"] for r in rows] == ["claude"] * 3
    assert all(r["status"] == 200 and r["cost_micro"] > 0 for r in rows)


def test_anthropic_channel_stream(
    both: Gateway, fake_anthropic: FakeAnthropic, sdk: SdkFactory
) -> None:
    key = both.create_key("claude-stream")
    events = sse_post(both, key, {"model": "test-claude", "input": "hi",
                                  "max_output_tokens": 100})  # fmt: skip
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final["output"][0]["content"][0]["text"] == "Hello from the fake upstream!"
    assert final["usage"]["input_tokens"] == 11
    with sdk(both, key).responses.stream(model="test-claude", input="hi", tools=[WEATHER],
                                         max_output_tokens=100) as stream:  # fmt: skip
        response = stream.get_final_response()
    (call,) = response.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert orjson.loads(call.arguments) == {"city": "Paris"}
    assert fake_anthropic.received[-1].body["stream"] is True


# --- stored responses ------------------------------------------------------------------------


def test_retrieve_list_delete_only_for_the_creating_key(gateway: Gateway, sdk: SdkFactory) -> None:
    owner = sdk(gateway, gateway.create_key("owner"))
    other = sdk(gateway, gateway.create_key("other"))
    turns: ResponseInputParam = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]},
    ]
    created, body = create(owner, model="test-model", input=turns)
    with httpx.Client() as http:
        raw = http.get(f"{gateway.base_url}/responses/{created.id}",
                       headers={"authorization": f"Bearer {owner.api_key}"})  # fmt: skip
    assert raw.status_code == 200 and raw.json() == body  # exactly what create answered
    with httpx.Client() as http:
        removed = http.delete(f"{gateway.base_url}/responses/{created.id}",
                              headers={"authorization": f"Bearer {other.api_key}"})  # fmt: skip
    assert removed.status_code == 404  # another key cannot delete it either
    assert owner.responses.retrieve(created.id).output_text == created.output_text

    raw_page = owner.responses.input_items.with_raw_response.list(created.id)
    validate_openai("ResponseItemList", orjson.loads(raw_page.content))
    page = raw_page.parse()  # newest first by default
    assert [i.type for i in page.data] == ["message"] * 3
    roles = [getattr(i, "role", None) for i in page.data]
    assert roles == ["user", "assistant", "user"][::-1]
    first = owner.responses.input_items.list(created.id, order="asc", limit=2)
    assert len(first.data) == 2 and first.has_more is True
    rest = owner.responses.input_items.list(created.id, order="asc", after=first.data[-1].id)
    assert len(rest.data) == 1 and rest.has_more is False
    assert rest.data[0].id not in {i.id for i in first.data}

    for call in (
        lambda: other.responses.retrieve(created.id),
        lambda: other.responses.input_items.list(created.id),
        lambda: other.responses.delete(created.id),
        lambda: other.responses.create(model="test-model", input="x",
                                       previous_response_id=created.id),
    ):  # fmt: skip
        with pytest.raises((openai.NotFoundError, openai.BadRequestError)) as caught:
            call()
        error = caught.value.body
        assert isinstance(error, dict) and error["type"] == "invalid_request_error"
        assert created.id in error["message"]
    owner.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as gone:
        owner.responses.retrieve(created.id)
    assert gone.value.status_code == 404 and gone.value.code == "not_found"
    with pytest.raises(openai.NotFoundError):
        owner.responses.delete(created.id)


def test_unknown_previous_response_is_400(gateway: Gateway, sdk: SdkFactory) -> None:
    client = sdk(gateway, gateway.create_key("prev"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="test-model", input="x", previous_response_id="resp_nope")
    assert caught.value.code == "previous_response_not_found"
    assert caught.value.param == "previous_response_id"


def test_retention_setting(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    gateway = gateway_factory([openai_channel(fake_openai)], responses={"retention_days": 2})
    key = gateway.create_key("retention")
    created, _ = create(sdk(gateway, key), model="test-model", input="hi")
    record = gateway.key_record(key)
    from sluice.inbound.responses_routes import response_store

    stored = gateway.call(response_store(gateway.state).get(created.id, record.id))
    assert stored is not None
    assert stored.expires_at - stored.created_at == pytest.approx(2 * 86_400)
    later = stored.created_at + 2 * 86_400 + 1
    assert gateway.call(response_store(gateway.state).get(created.id, record.id, now=later)) is None


# --- what a translated channel refuses, and other fields -------------------------------------


BUILTIN_TOOLS: list[ToolParam] = [
    {"type": "web_search"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "computer_use_preview", "display_height": 768, "display_width": 1024,
     "environment": "linux"},
]  # fmt: skip


@pytest.mark.parametrize("tool", BUILTIN_TOOLS, ids=lambda t: str(t["type"]))
def test_builtin_tools_are_a_clear_400(gateway: Gateway, sdk: SdkFactory, tool: ToolParam) -> None:
    key = gateway.create_key("builtin")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, key).responses.create(model="test-model", input="x", tools=[tool])
    assert caught.value.code == "unsupported_tool" and caught.value.param == "tools[0].type"
    assert str(tool["type"]) in caught.value.message
    assert gateway.usage_rows(key) == []  # refused before admission: nothing reserved or billed


def test_text_format_reasoning_and_images(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    client = sdk(gateway, gateway.create_key("format"))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    create(
        client,
        model="test-model",
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Where?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw==",
             "detail": "low"}]}],
        text={"format": {"type": "json_schema", "name": "place", "schema": schema,
                         "strict": True}},
        reasoning={"effort": "low"},
    )  # fmt: skip
    sent = fake_openai.received[-1].body
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }
    assert sent["reasoning_effort"] == "low"
    assert sent["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw==", "detail": "low"},
    }


def test_token_limit_makes_an_incomplete_response(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    cut = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "Hello from"}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 16, "total_tokens": 27},
    }  # fmt: skip
    fake_openai.script.append(Scripted(body=orjson.dumps(cut)))
    client = sdk(gateway, gateway.create_key("cut"))
    response, _ = create(client, model="test-model", input="hi", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hello from" and response.max_output_tokens == 16
    assert fake_openai.received[-1].body["max_completion_tokens"] == 16


def test_stream_cut_by_the_upstream_fails_the_response(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    channel = openai_channel(fake_openai, headers={"x-fake-truncate": "1"})
    gateway = gateway_factory([channel])
    key = gateway.create_key("truncated")
    with httpx.Client(timeout=30) as http:
        reply = http.post(
            f"{gateway.base_url}/responses",
            json={"model": "test-model", "input": "hi", "stream": True},
            headers={"authorization": f"Bearer {key}"},
        )
    events = validate_frames([reply.content])
    assert [e["type"] for e in events if e["type"].endswith(".delta")] == [
        "response.output_text.delta"] * 2  # fmt: skip
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert "sk-upstream" not in reply.text


# --- hostile or wrong requests: OpenAI-shaped errors, nothing billed ---------------------------


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"[1, 2]", 400, "invalid_request_body"),
        (b"{not json", 400, "invalid_json"),
        (b'{"model": "test-model"}', 400, "missing_required_parameter"),
        (b'{"model": "test-model", "input": "x", "tools": [{"type": "mcp"}]}', 400,
         "unsupported_tool"),
        (b'{"model": "nope", "input": "x"}', 404, "model_not_found"),
    ],
)  # fmt: skip
def test_bad_bodies_are_openai_shaped(
    gateway: Gateway, content: bytes, status: int, code: str
) -> None:
    key = gateway.create_key("hostile")
    with httpx.Client() as http:
        reply = http.post(
            f"{gateway.base_url}/responses",
            content=content,
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}
    assert reply.headers["x-request-id"]
    assert gateway.usage_rows(key) == []


def test_stored_routes_need_a_key_and_refuse_bad_queries(gateway: Gateway) -> None:
    with httpx.Client() as http:
        anonymous = http.get(f"{gateway.base_url}/responses/resp_x")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "missing_api_key"
        key = gateway.create_key("queries")
        auth = {"authorization": f"Bearer {key}"}
        bad = http.get(f"{gateway.base_url}/responses/resp_x/input_items?limit=500", headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
        long_id = "resp_" + "x" * 300
        missing = http.get(f"{gateway.base_url}/responses/{long_id}", headers=auth)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        validate_openai("Error", missing.json()["error"])  # the spec's 404 body
        deleted = http.delete(f"{gateway.base_url}/responses/resp_unknown", headers=auth)
        assert deleted.status_code == 404
        validate_openai("Error", deleted.json()["error"])
        resumed = http.get(f"{gateway.base_url}/responses/resp_x?stream=true", headers=auth)
        assert resumed.status_code == 400
        assert resumed.json()["error"]["code"] == "unsupported_parameter"


# --- a Gemini channel --------------------------------------------------------------------------


@pytest.fixture
def fake_gemini(loop_thread: LoopThread) -> Iterator[FakeGemini]:
    fake = loop_thread.run(FakeGemini().start())
    yield fake
    loop_thread.run(fake.stop())
    assert not fake.violations, fake.violations


def test_gemini_channel_tool_round_trip_streamed(
    gateway_factory: GatewayFactory, fake_gemini: FakeGemini, sdk: SdkFactory
) -> None:
    channel = {"name": "gemini", "type": "gemini", "base_url": fake_gemini.base_url,
               "api_key": GEMINI_KEY, "model_map": {"test-gemini": "gemini-test"}}  # fmt: skip
    gateway = gateway_factory([channel])
    key = gateway.create_key("gemini", budget_micro=10_000_000)
    client = sdk(gateway, key)
    with client.responses.stream(model="test-gemini", input="Weather in Paris?",
                                 tools=[WEATHER]) as stream:  # fmt: skip
        first = stream.get_final_response()
    (call,) = first.output
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "get_weather"
    output: ResponseInputParam = [
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}
    ]
    second, _ = create(client, model="test-gemini", previous_response_id=first.id, input=output,
                       tools=[WEATHER], tool_choice="none")  # fmt: skip
    assert second.output_text
    contents = fake_gemini.received[-1].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert "functionResponse" in contents[2]["parts"][0]
    events = sse_post(gateway, key, {"model": "test-gemini", "input": "hi"})
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"]
    rows = gateway.usage_rows(key)
    assert [r["channel"] for r in rows] == ["gemini"] * 3
    assert all(r["status"] == 200 and r["cost_micro"] > 0 for r in rows)


async def test_async_client_create_stream_and_retrieve(gateway: Gateway) -> None:
    key = gateway.create_key("async", budget_micro=10_000_000)
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        created = await client.responses.create(model="test-model", input="hi")
        assert created.output_text == "Hello from the fake upstream!"
        async with client.responses.stream(
            model="test-model", input="again", previous_response_id=created.id
        ) as stream:
            final = await stream.get_final_response()
        assert final.previous_response_id == created.id and final.status == "completed"
        stored = await client.responses.retrieve(final.id)
        assert stored.output_text == final.output_text
        items = await client.responses.input_items.list(final.id, order="asc")
        texts = [item.model_dump()["content"][0]["text"] for item in items.data]
        assert texts == ["hi", "Hello from the fake upstream!", "again"]
        await client.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(created.id)
    assert [row["stream"] for row in gateway.usage_rows(key)] == [False, True]
