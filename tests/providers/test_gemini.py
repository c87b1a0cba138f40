"""The ``gemini`` channel end to end: the official OpenAI SDK -> Sluice -> a fake Gemini API.

The fake (tests/fakes/gemini_upstream.py) validates what Sluice sends against the google-genai
SDK types and Gemini's own rules, and answers in Gemini's wire format; these tests check what
the OpenAI client gets back, what reached the fake, and what was billed.
"""

from __future__ import annotations

import base64
import logging
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionUserMessageParam

from sluice.health import MemoryChannelHealth
from tests.conftest import GatewayFactory
from tests.fakes.gemini_upstream import (
    SIGNATURE,
    UPSTREAM_KEY,
    FakeGemini,
    GeminiScripted,
    error_body,
)
from tests.openapi_schema import validate_openai
from tests.support import Gateway, LoopThread, make_settings, start_gateway

SdkFactory = Callable[..., openai.OpenAI]
MODEL = "gemini-2.5-flash"
GEMINI_3 = "gemini-2.5-flash-as-3"
SAFETY = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": ["string", "null"], "enum": ["c", "f", None]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


@pytest.fixture(scope="module")
def shared_fake(loop_thread: LoopThread) -> Iterator[FakeGemini]:
    fake = loop_thread.run(FakeGemini().start())
    yield fake
    loop_thread.run(fake.stop())


@pytest.fixture
def fake_gemini(shared_fake: FakeGemini) -> Iterator[FakeGemini]:
    """The module's fake, emptied before each test and checked for rejected requests after."""
    shared_fake.received.clear()
    shared_fake.script.clear()
    shared_fake.violations.clear()
    yield shared_fake
    assert not shared_fake.violations, shared_fake.violations


def gemini_channel(fake: FakeGemini, **overrides: Any) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "name": "gemini-main",
        "type": "gemini",
        "base_url": fake.base_url,
        "api_key": UPSTREAM_KEY,
        "models": ["gemini-*"],
        "model_map": {GEMINI_3: "gemini-3-flash-preview"},  # priced in shared_gateway
        "safety_settings": SAFETY,
    }
    channel.update(overrides)
    return channel


@pytest.fixture(scope="module")
def shared_gateway(
    loop_thread: LoopThread, shared_fake: FakeGemini, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    # One gateway for the module keeps the tests fast; each test bills a fresh key.
    # No pause after a 429's retry hint: there is only one channel to fail over to.
    settings = make_settings(
        tmp_path_factory.mktemp("gemini"),
        [gemini_channel(shared_fake)],
        retry={"max_retry_after_s": 0},
        # The upstream model is what is billed (not the alias), and the shipped table has no
        # Gemini 3 price yet.
        pricing={
            "overrides": {
                "test-*": {"input": 1.0, "output": 2.0},
                "gemini-3-flash-preview": {"input": 0.3, "output": 2.5},
            }
        },
    )
    gateway = start_gateway(loop_thread, settings)
    yield gateway
    gateway.stop()


@pytest.fixture
def gateway(shared_gateway: Gateway, fake_gemini: FakeGemini) -> Gateway:
    state = shared_gateway.state
    # Fresh circuit breakers: an earlier test's scripted failures must not affect this one.
    state.health = MemoryChannelHealth(state.settings.circuit)
    return shared_gateway


@pytest.fixture
def client(gateway: Gateway, sdk: SdkFactory) -> Any:
    return sdk(gateway, gateway.create_key("gemini", budget_micro=10_000_000))


def user(text: str) -> ChatCompletionUserMessageParam:
    return {"role": "user", "content": text}


def chat(client: Any, **options: Any) -> Any:
    options.setdefault("model", MODEL)
    options.setdefault("messages", [user("hi")])
    raw = client.chat.completions.with_raw_response.create(**options)
    validate_openai("CreateChatCompletionResponse", orjson.loads(raw.http_response.content))
    return raw.parse()


def last_body(fake: FakeGemini) -> dict[str, Any]:
    assert not fake.violations, fake.violations
    return fake.received[-1].body


# --- chat -------------------------------------------------------------------------------------


def test_text_reply_is_translated_and_billed(
    gateway: Gateway, fake_gemini: FakeGemini, client: Any
) -> None:
    reply = chat(client)
    assert reply.choices[0].message.content == "Hello from Gemini!"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == MODEL
    assert reply.usage.prompt_tokens == 12 and reply.usage.completion_tokens == 4
    received = fake_gemini.received[-1]
    assert received.path == f"/v1beta/models/{MODEL}:generateContent"
    assert received.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert "key" not in received.query and "Authorization" not in received.headers
    assert last_body(fake_gemini) == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "safetySettings": SAFETY,
    }
    row = gateway.usage_rows(client.api_key)[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"]) == (12, 4, 200)
    # gemini-2.5-flash: 12 x $0.30/M + 4 x $2.50/M = 13.6 micro-dollars, rounded half up
    assert row["cost_micro"] == 14 and row["channel"] == "gemini-main"


def test_system_and_developer_messages_become_system_instruction(
    fake_gemini: FakeGemini, client: Any
) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
        user("hi"),
    ]
    reply = chat(client, messages=messages)
    assert reply.choices[0].message.content.startswith("[sys]")
    body = last_body(fake_gemini)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]}
    assert [c["role"] for c in body["contents"]] == ["user"]


def test_multi_turn_alternates_roles_and_merges_same_role(
    fake_gemini: FakeGemini, client: Any
) -> None:
    messages = [
        user("one"),
        {"role": "assistant", "content": "two"},
        user("three"),
        user("four"),
    ]
    chat(client, messages=messages, temperature=0.2, top_p=0.9, seed=7, n=2)
    body = last_body(fake_gemini)
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}]},
        {"role": "model", "parts": [{"text": "two"}]},
        {"role": "user", "parts": [{"text": "three"}, {"text": "four"}]},
    ]
    assert body["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "seed": 7, "candidateCount": 2,
    }  # fmt: skip


def test_n_candidates_become_choices(client: Any) -> None:
    reply = chat(client, n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[1].message.content == "Hello from Gemini!"


def test_image_data_url_becomes_inline_data(fake_gemini: FakeGemini, client: Any) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]
    chat(client, messages=[{"role": "user", "content": content}])
    parts = last_body(fake_gemini)["contents"][0]["parts"]
    assert parts == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": png}},
    ]


def test_remote_image_url_is_a_clear_400(fake_gemini: FakeGemini, client: Any) -> None:
    content = [{"type": "image_url", "image_url": {"url": "ftp://example.invalid/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    assert caught.value.param == "messages[0].content[0].image_url.url"
    assert fake_gemini.received == []


def test_tool_round_trip_recovers_function_name(
    gateway: Gateway, fake_gemini: FakeGemini, client: Any
) -> None:
    messages: list[Any] = [user("Weather in Paris?")]
    first = chat(client, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    declaration = last_body(fake_gemini)["tools"][0]["functionDeclarations"][0]
    assert declaration["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "nullable": True, "enum": ["c", "f"]},
        },
        "required": ["city"],
    }
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'})
    second = chat(client, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == 'Tool said: get_weather={"temp":21}'
    contents = last_body(fake_gemini)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": "c2lnbmF0dXJl",
        }
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}
    ]
    assert len(gateway.usage_rows(client.api_key)) == 2


def test_gemini3_call_ids_and_signatures_round_trip(fake_gemini: FakeGemini, client: Any) -> None:
    messages: list[Any] = [user("Weather in Paris?")]
    first = chat(client, model=GEMINI_3, messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    assert call.id.startswith("gem-"), "Gemini's own id is the OpenAI tool call id"
    assert call.model_dump()["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assistant = first.choices[0].message.model_dump(exclude_none=True)
    answer = {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    chat(client, model=GEMINI_3, messages=[*messages, assistant, answer], tools=[WEATHER_TOOL])
    contents = last_body(fake_gemini)["contents"]
    assert contents[1]["parts"][0]["functionCall"]["id"] == call.id
    assert contents[2]["parts"][0]["functionResponse"] == {
        "name": "get_weather", "id": call.id, "response": {"output": "sunny"},
    }  # fmt: skip
    # A client that drops the signature gets Gemini 3's own 400, passed through.
    del assistant["tool_calls"][0]["extra_content"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=GEMINI_3, messages=[*messages, assistant, answer], tools=[WEATHER_TOOL]
        )
    assert "thought_signature" in caught.value.message
    fake_gemini.violations.clear()


def test_tool_message_with_unknown_call_id_is_400(fake_gemini: FakeGemini, client: Any) -> None:
    messages = [user("hi"), {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert caught.value.param == "messages[1].tool_call_id"
    assert fake_gemini.received == []


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "lookup"}},
            {"mode": "ANY", "allowedFunctionNames": ["lookup"]},
        ),
    ],
)
def test_tool_choice_becomes_function_calling_config(
    fake_gemini: FakeGemini, client: Any, tool_choice: Any, expected: dict[str, Any]
) -> None:
    lookup = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    reply = chat(client, tools=[WEATHER_TOOL, lookup], tool_choice=tool_choice)
    body = last_body(fake_gemini)
    assert body["toolConfig"] == {"functionCallingConfig": expected}
    assert body["tools"][0]["functionDeclarations"][1] == {"name": "lookup"}
    if expected["mode"] == "NONE":
        assert reply.choices[0].message.tool_calls is None
    else:
        name = expected.get("allowedFunctionNames", ["get_weather"])[0]
        assert reply.choices[0].message.tool_calls[0].function.name == name


def test_stop_sequence(fake_gemini: FakeGemini, client: Any) -> None:
    reply = chat(client, stop="Gemini")
    assert last_body(fake_gemini)["generationConfig"] == {"stopSequences": ["Gemini"]}
    assert reply.choices[0].message.content == "Hello from"
    assert reply.choices[0].finish_reason == "stop"


def test_max_tokens_gives_length(fake_gemini: FakeGemini, client: Any) -> None:
    reply = chat(client, max_completion_tokens=2)
    assert last_body(fake_gemini)["generationConfig"] == {"maxOutputTokens": 2}
    assert reply.choices[0].message.content == "Hello from"
    assert reply.choices[0].finish_reason == "length"


def test_json_schema_response_format(fake_gemini: FakeGemini, client: Any) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}},
              "additionalProperties": False}  # fmt: skip
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    chat(client, response_format=response_format)
    assert last_body(fake_gemini)["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}},
    }


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        (MODEL, "low", {"thinkingBudget": 1024}),
        (MODEL, "high", {"thinkingBudget": 24576}),
        (MODEL, "none", {"thinkingBudget": 0}),  # Gemini 2.5 Flash: thinking off
        (GEMINI_3, "medium", {"thinkingLevel": "medium"}),  # Gemini 3 takes a level
        (GEMINI_3, "none", None),  # Gemini 3 cannot turn thinking off: its default stays
    ],
)
def test_reasoning_effort_becomes_thinking_config(
    fake_gemini: FakeGemini, client: Any, model: str, effort: str, expected: Any
) -> None:
    chat(client, model=model, reasoning_effort=effort)
    assert last_body(fake_gemini).get("generationConfig", {}).get("thinkingConfig") == expected


def test_safety_finish_is_content_filter(client: Any) -> None:
    reply = chat(client, model=f"{MODEL}-safety")
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content is None


def test_blocked_prompt_is_content_filter_and_bills_prompt(gateway: Gateway, client: Any) -> None:
    reply = chat(client, model=f"{MODEL}-blocked")
    assert [c.finish_reason for c in reply.choices] == ["content_filter"]
    row = gateway.usage_rows(client.api_key)[0]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 0)


def test_thinking_tokens_are_billed_as_completion(gateway: Gateway, client: Any) -> None:
    reply = chat(client, model=f"{MODEL}-thinking")
    assert reply.usage.completion_tokens == 9
    assert reply.usage.completion_tokens_details.reasoning_tokens == 5
    assert gateway.usage_rows(client.api_key)[0]["completion_tokens"] == 9


# --- streaming --------------------------------------------------------------------------------


def stream(client: Any, **options: Any) -> list[Any]:
    options.setdefault("model", MODEL)
    options.setdefault("messages", [user("hi")])
    chunks = list(client.chat.completions.create(stream=True, **options))
    for chunk in chunks:
        validate_openai("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
    return chunks


def test_streamed_text(gateway: Gateway, fake_gemini: FakeGemini, client: Any) -> None:
    chunks = stream(client)
    received = fake_gemini.received[-1]
    assert received.path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert received.query == {"alt": "sse"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Gemini!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "the client did not ask for usage"
    assert len({c.id for c in chunks}) == 1
    row = gateway.usage_rows(client.api_key)[0]
    # the last usageMetadata (4 candidate tokens), not the sum over events (1+2+3+4)
    assert (row["completion_tokens"], row["stream"], row["status"]) == (4, True, 200)


def test_streamed_usage_when_asked(client: Any) -> None:
    chunks = stream(client, stream_options={"include_usage": True})
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].usage.prompt_tokens == 12


def test_streamed_function_call(client: Any) -> None:
    chunks = stream(client, tools=[WEATHER_TOOL], tool_choice="required")
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    # OpenAI's shape: id + name with empty arguments, then the arguments (whole, here).
    assert len(calls) == 2 and all(call.index == 0 for call in calls)
    head, rest = calls
    assert head.id.startswith("call_") and head.type == "function"
    assert head.function.name == "get_weather" and head.function.arguments == ""
    assert rest.id is None and rest.function.name is None
    assert orjson.loads(rest.function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_streamed_safety_and_blocked(client: Any) -> None:
    for model in (f"{MODEL}-safety", f"{MODEL}-blocked"):
        chunks = stream(client, model=model)
        assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_truncated_stream_ends_with_error(gateway: Gateway, client: Any) -> None:
    with pytest.raises(openai.APIError) as caught:
        stream(client, model=f"{MODEL}-truncate")
    assert "ended before it was complete" in caught.value.message
    row = gateway.usage_rows(client.api_key)[0]
    assert (row["status"], row["error_code"]) == (502, "upstream_stream_truncated")
    # what was delivered is still billed, from the last usageMetadata the upstream sent
    assert row["completion_tokens"] == 4


def test_raw_stream_frames_end_with_done(gateway: Gateway, client: Any) -> None:
    with httpx.Client() as http:
        response = http.post(
            f"{gateway.base_url}/chat/completions",
            headers={"authorization": f"Bearer {client.api_key}"},
            json={"model": MODEL, "messages": [user("hi")], "stream": True},
        )
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert UPSTREAM_KEY not in response.text


# --- embeddings -------------------------------------------------------------------------------


def test_embeddings_float_and_billing(
    gateway: Gateway, fake_gemini: FakeGemini, client: Any
) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="gemini-embedding-001", input=["alpha", "beta"], encoding_format="float",
        dimensions=3,
    )  # fmt: skip
    validate_openai("CreateEmbeddingResponse", orjson.loads(raw.http_response.content))
    result = raw.parse()
    assert [d.embedding for d in result.data] == [[0.5, 0.25, 0.25], [1.5, 0.25, 0.25]]
    assert result.usage.prompt_tokens == 2
    received = fake_gemini.received[-1]
    assert received.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert received.body["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "alpha"}]},
        "outputDimensionality": 3,
    }
    row = gateway.usage_rows(client.api_key)[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"]) == (2, 0, 200)


def test_embeddings_base64(gateway: Gateway, client: Any) -> None:
    # The SDK asks for base64 by default and decodes it back to floats.
    result = client.embeddings.create(model="gemini-embedding-001", input="alpha")
    assert result.data[0].embedding == [0.5, 0.25, 0.25, 0.25]
    with httpx.Client() as http:
        response = http.post(
            f"{gateway.base_url}/embeddings",
            headers={"authorization": f"Bearer {client.api_key}"},
            json={"model": "gemini-embedding-001", "input": "a", "encoding_format": "base64"},
        )
    encoded = response.json()["data"][0]["embedding"]
    assert struct.unpack("<4f", base64.b64decode(encoded)) == (0.5, 0.25, 0.25, 0.25)


def test_embeddings_token_arrays_are_refused(fake_gemini: FakeGemini, client: Any) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="gemini-embedding-001", input=[[1, 2, 3]])
    assert fake_gemini.received == []


def test_completions_are_not_offered_on_gemini(fake_gemini: FakeGemini, client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="hi")
    assert "not supported" in caught.value.message
    assert fake_gemini.received == []


# --- upstream errors --------------------------------------------------------------------------


def _script(fake: FakeGemini, status: int, body: bytes, **headers: str) -> None:
    fake.script.append(GeminiScripted(status=status, body=body, headers=headers))


def test_upstream_400_passes_through_redacted(
    fake_gemini: FakeGemini, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    message = f"Invalid value at 'contents' (key {UPSTREAM_KEY} seen)"
    _script(fake_gemini, 400, error_body(400, "INVALID_ARGUMENT", message))
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client)
    assert caught.value.code == "invalid_argument"
    assert "Invalid value at 'contents'" in caught.value.message
    assert UPSTREAM_KEY not in caught.value.message and "AIza" not in caught.value.message
    assert caplog.records, "the failure is logged"
    assert UPSTREAM_KEY not in caplog.text


@pytest.mark.parametrize(("status", "name"), [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED")])
def test_upstream_auth_failures_are_hidden(
    fake_gemini: FakeGemini, client: Any, status: int, name: str
) -> None:
    _script(fake_gemini, status, error_body(status, name, "Project 1234 has no access"))
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth_failed"
    assert "1234" not in caught.value.message


def test_invalid_api_key_400_is_an_auth_failure(
    gateway_factory: GatewayFactory, fake_gemini: FakeGemini, sdk: SdkFactory
) -> None:
    channel = gemini_channel(fake_gemini, api_key="AIzaSyWRONG-key-0000000000000000")
    gateway = gateway_factory([channel])
    client = sdk(gateway, gateway.create_key())
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=[user("hi")])
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth_failed"
    assert "API key not valid" not in caught.value.message
    # The channel's health probe confirms the failure with the same key before disabling it.
    health = gateway.state.health
    for _ in range(500):
        if health.disabled_channels():
            break
        time.sleep(0.01)
    assert health.disabled_channels() == ["gemini-main"]
    assert fake_gemini.violations == ["API key not valid. Please pass a valid API key."] * 2
    fake_gemini.violations.clear()


def test_upstream_429_is_rate_limit_with_retry_hint(fake_gemini: FakeGemini, client: Any) -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
    body = error_body(429, "RESOURCE_EXHAUSTED", "Quota exceeded", [retry])
    _script(fake_gemini, 429, body)
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "upstream_rate_limited"


def test_upstream_500_is_retryable_server_error(fake_gemini: FakeGemini, client: Any) -> None:
    for _ in range(3):
        _script(fake_gemini, 500, error_body(500, "INTERNAL", "An internal error has occurred."))
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_error"


def test_upstream_500_then_success_is_retried(
    gateway_factory: GatewayFactory, fake_gemini: FakeGemini, sdk: SdkFactory
) -> None:
    gateway = gateway_factory(
        [gemini_channel(fake_gemini), gemini_channel(fake_gemini, name="gemini-backup")]
    )
    client = sdk(gateway, gateway.create_key())
    _script(fake_gemini, 503, error_body(503, "UNAVAILABLE", "The model is overloaded."))
    reply = client.chat.completions.create(model=MODEL, messages=[user("hi")])
    assert reply.choices[0].message.content == "Hello from Gemini!"
    assert len(fake_gemini.received) == 2


def test_malformed_upstream_body_is_502(fake_gemini: FakeGemini, client: Any) -> None:
    fake_gemini.script.append(GeminiScripted(behaviour="malformed"))
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client)
    assert caught.value.status_code == 502
