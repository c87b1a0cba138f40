"""Every relayed endpoint through the official SDK, with responses checked against OpenAI's spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall, ChatCompletionToolUnionParam

from tests.fakes.openai_upstream import FakeOpenAI
from tests.openapi_schema import validate_openai
from tests.support import Gateway

SdkFactory = Callable[..., openai.OpenAI]
TOOLS: list[ChatCompletionToolUnionParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_tools_are_forwarded_and_tool_calls_returned(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    client = sdk(gateway, gateway.create_key())
    raw = client.chat.completions.with_raw_response.create(
        model="test-model",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS,
        tool_choice="auto",
        parallel_tool_calls=False,
        seed=7,
        logit_bias={"50256": -100},
        response_format={"type": "json_object"},
        extra_body={"future_field": {"nested": True}},
    )
    validate_openai("CreateChatCompletionResponse", orjson.loads(raw.http_response.content))
    reply = raw.parse()
    tool_calls = reply.choices[0].message.tool_calls
    assert tool_calls is not None
    call = tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather" and reply.choices[0].finish_reason == "tool_calls"
    sent = fake_openai.received[0].body
    assert sent["tools"] == TOOLS and sent["parallel_tool_calls"] is False and sent["seed"] == 7
    assert sent["future_field"] == {"nested": True}, "unknown fields are forwarded untouched"
    assert sent["response_format"] == {"type": "json_object"}


def test_tool_result_round_trip_and_vision_parts(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    client = sdk(gateway, gateway.create_key())
    image = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4Dw"
        "ABBAEAwS2OUAAAAABJRU5ErkJggg=="
    )
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    reply = client.chat.completions.create(model="test-model", messages=messages)
    assert reply.choices[0].message.content
    assert fake_openai.received[0].body["messages"] == messages


def test_n_2_returns_two_choices_and_bills_both(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = gateway.create_key()
    client = sdk(gateway, key)
    reply = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}], n=2, logprobs=True,
        top_logprobs=2,
    )  # fmt: skip
    assert [c.index for c in reply.choices] == [0, 1]
    assert gateway.usage_rows(key)[0]["completion_tokens"] == 12


def test_streamed_tool_call_fragments_are_forwarded(gateway: Gateway, sdk: SdkFactory) -> None:
    client = sdk(gateway, gateway.create_key())
    stream = client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "weather?"}],
        tools=TOOLS,
        stream=True,
    )
    arguments = ""
    finish = None
    for chunk in stream:
        validate_openai("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.function is not None
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert orjson.loads(arguments) == {"city": "Paris"} and finish == "tool_calls"


def test_legacy_completions(gateway: Gateway, sdk: SdkFactory) -> None:
    key = gateway.create_key()
    client = sdk(gateway, key)
    raw = client.completions.with_raw_response.create(model="test-instruct", prompt="Say")
    validate_openai("CreateCompletionResponse", orjson.loads(raw.http_response.content))
    assert raw.parse().choices[0].text == " world"
    assert gateway.usage_rows(key)[0]["endpoint"] == "completions"


def test_embeddings_are_billed_on_prompt_tokens(gateway: Gateway, sdk: SdkFactory) -> None:
    key = gateway.create_key()
    client = sdk(gateway, key)
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    validate_openai("CreateEmbeddingResponse", orjson.loads(raw.http_response.content))
    assert len(raw.parse().data) == 2
    row = gateway.usage_rows(key)[0]
    assert row["prompt_tokens"] == 10 and row["completion_tokens"] == 0
    # text-embedding-3-small: $0.02 per 1M tokens -> 10 tokens cost 0.2 micro-dollars -> 0
    assert row["cost_micro"] == 0


def test_moderations_default_model(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    client = sdk(gateway, gateway.create_key())
    result = client.moderations.create(input="hello")
    assert result.results[0].flagged is False
    assert fake_openai.received[0].body["model"] == "omni-moderation-latest"


def test_models_list_respects_key_and_validates(gateway: Gateway, sdk: SdkFactory) -> None:
    client = sdk(gateway, gateway.create_key(allowed_models=["gpt-4o-mini"]))
    raw = client.models.with_raw_response.list()
    body = orjson.loads(raw.http_response.content)
    validate_openai("ListModelsResponse", body)
    assert [m["id"] for m in body["data"]] == ["gpt-4o-mini"]
    model = client.models.retrieve("gpt-4o-mini")
    validate_openai("Model", model.model_dump())
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("text-embedding-3-small")  # served, but not for this key
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_all_models_listed_for_unrestricted_key(gateway: Gateway) -> None:
    key = gateway.create_key()
    response = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {key}"})
    ids = {m["id"] for m in response.json()["data"]}
    assert ids == {"gpt-4o-mini", "text-embedding-3-small", "omni-moderation-latest"}


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, openai.BadRequestError), (404, openai.NotFoundError), (500, openai.InternalServerError)],
)
def test_upstream_errors_surface_as_openai_errors(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory, status: int, error_class: Any
) -> None:
    from tests.fakes.openai_upstream import Scripted

    body = orjson.dumps(
        {
            "error": {
                "message": "bad thing",
                "type": "invalid_request_error",
                "param": None,
                "code": "x",
            }
        }  # fmt: skip
    )
    fake_openai.script = [Scripted(status=status, body=body) for _ in range(3)]
    key = gateway.create_key()
    client = sdk(gateway, key)
    with pytest.raises(error_class) as caught:
        client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "x"}]
        )
    expected = 502 if status == 500 else status
    assert caught.value.status_code == expected
    rows = gateway.usage_rows(key)
    assert len(rows) == 1 and rows[0]["cost_micro"] == 0 and rows[0]["status"] == expected
