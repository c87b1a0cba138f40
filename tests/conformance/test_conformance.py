"""One suite, every provider: the official OpenAI SDK -> Sluice -> a fake upstream on loopback.

Each test runs once per entry of ``tests.conformance.cases.PROVIDERS`` (openai,
openai-compatible, azure, anthropic; gemini joins by adding one fake and one entry — see the
docstring of ``cases.py``). Tests assert three things: what the client got (validated against
OpenAI's published schema), what the upstream received (through the provider-neutral
``Canon``), and what was billed. Fakes reject requests the real provider would reject, and the
``provider`` fixture fails the test if any was rejected.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.conformance.cases import MODEL, OPENAI_KEY, PRIVATE_MODEL, TRUNCATE_MODEL
from tests.conformance.conftest import PNG_BYTES, Env, ImageServer
from tests.openapi_schema import validate_openai

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()


@pytest.fixture
def client(provider: Env) -> Iterator[OpenAI]:
    key = provider.gateway.create_key("conformance", budget_micro=10_000_000)
    sdk = OpenAI(base_url=provider.gateway.base_url, api_key=key, max_retries=0)
    yield sdk
    sdk.close()


def chat(client: OpenAI, **kwargs: Any) -> Any:
    """Non-streaming call; the raw JSON is validated against the OpenAI spec."""
    kwargs.setdefault("model", MODEL)
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    validate_openai("CreateChatCompletionResponse", raw.http_response.json())
    return raw.parse()


def stream(client: OpenAI, **kwargs: Any) -> list[Any]:
    kwargs.setdefault("model", MODEL)
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    for chunk in chunks:
        validate_openai("CreateChatCompletionStreamResponse", chunk.to_dict())
    return chunks


def streamed_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def last_canon(provider: Env) -> Any:
    requests = provider.requests()
    assert requests, "the upstream received nothing"
    return provider.case.canon(requests[-1])


def key_of(client: OpenAI) -> str:
    return str(client.api_key)


USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]

# --- requests and replies ----------------------------------------------------------------------


def test_plain_text(provider: Env, client: OpenAI) -> None:
    reply = chat(client, messages=USER)
    assert reply.choices[0].message.content == provider.case.reply_text
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.role == "assistant"
    canon = last_canon(provider)
    assert canon.texts == [("user", "hi")] and canon.roles == ["user"]


def test_system_prompt(provider: Env, client: OpenAI) -> None:
    chat(
        client,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "hi"},
        ],
    )
    canon = last_canon(provider)
    assert canon.system == "Be brief.\nBe kind."
    assert canon.texts == [("user", "hi")]


def test_multi_turn(provider: Env, client: OpenAI) -> None:
    chat(
        client,
        messages=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
            {"role": "user", "content": "four"},
        ],
    )
    canon = last_canon(provider)
    assert canon.roles == ["user", "assistant", "user"]
    assert canon.texts == [("user", "one"), ("assistant", "two"), ("user", "three"),
                           ("user", "four")]  # fmt: skip


def test_image_data_url(provider: Env, client: OpenAI) -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG_DATA_URL}},
    ]
    chat(client, messages=[{"role": "user", "content": content}])
    canon = last_canon(provider)
    assert canon.images == [("data", "image/png", PNG_DATA_URL.split(",", 1)[1])]


def test_image_remote_url_allowed_channel(
    provider: Env, client: OpenAI, image_server: ImageServer
) -> None:
    url = image_server.url()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]
    chat(client, model=PRIVATE_MODEL, messages=[{"role": "user", "content": content}])
    canon = last_canon(provider)
    if provider.case.inlines_images:
        assert canon.images == [("data", "image/png", base64.b64encode(PNG_BYTES).decode())]
    else:
        assert canon.images == [("url", url)]  # the upstream fetches it itself


def test_image_loopback_url_refused(
    provider: Env, client: OpenAI, image_server: ImageServer
) -> None:
    url = image_server.url()
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
    if not provider.case.inlines_images:
        chat(client, messages=[message])
        assert last_canon(provider).images == [("url", url)]
        return
    hits = image_server.hits
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, messages=[message])
    assert caught.value.code == "invalid_image_url"
    assert "private, loopback or link-local" in caught.value.message
    assert image_server.hits == hits, "the gateway must not connect to a refused address"
    assert provider.requests() == []


def test_image_remote_not_an_image(
    provider: Env, client: OpenAI, image_server: ImageServer
) -> None:
    if not provider.case.inlines_images:
        pytest.skip("pass-through providers do not fetch images")
    content = [{"type": "image_url", "image_url": {"url": image_server.url("/page.html")}}]
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, model=PRIVATE_MODEL, messages=[{"role": "user", "content": content}])
    assert "not an image" in caught.value.message


# --- tools -------------------------------------------------------------------------------------


def test_tool_call_and_result_round_trip(provider: Env, client: OpenAI) -> None:
    first = chat(client, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.type == "function" and call.id
    import json

    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert last_canon(provider).tools == ["get_weather"]
    history = [
        {"role": "user", "content": "weather?"},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ]
    chat(client, messages=history, tools=[WEATHER], tool_choice="none")
    canon = last_canon(provider)
    assert canon.tool_calls == [(call.id, "get_weather", {"city": "Paris"})]
    assert canon.tool_results == [(call.id, "sunny")]
    assert canon.roles == ["user", "assistant", "user"]
    assert canon.tool_choice == "none"


def test_forced_tool_choice(provider: Env, client: OpenAI) -> None:
    reply = chat(
        client,
        messages=USER,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    canon = last_canon(provider)
    assert canon.tool_choice == ("tool", "get_weather")
    assert canon.tools == ["get_weather", "get_time"]


def test_required_tool_choice(provider: Env, client: OpenAI) -> None:
    chat(client, messages=USER, tools=[WEATHER], tool_choice="required")
    assert last_canon(provider).tool_choice == "required"


# --- streaming ---------------------------------------------------------------------------------


def test_streamed_text(provider: Env, client: OpenAI) -> None:
    chunks = stream(client, messages=USER)
    assert streamed_text(chunks) == provider.case.reply_text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert all(c.usage is None for c in chunks), "the client did not ask for usage"
    assert last_canon(provider).stream


def test_streamed_usage_when_asked(provider: Env, client: OpenAI) -> None:
    chunks = stream(client, messages=USER, stream_options={"include_usage": True})
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.prompt_tokens == provider.case.prompt_tokens
    assert usage.completion_tokens == provider.case.completion_tokens


def test_streamed_tool_call_fragments(provider: Env, client: OpenAI) -> None:
    chunks = stream(client, messages=USER, tools=[WEATHER])
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert len(deltas) >= 2, "arguments should arrive in fragments"
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    arguments = "".join(d.function.arguments or "" for d in deltas)
    import json

    assert json.loads(arguments) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


# --- stop reasons ------------------------------------------------------------------------------


def test_stop_sequence(provider: Env, client: OpenAI) -> None:
    word = provider.case.stop_word
    reply = chat(client, messages=USER, stop=[word])
    assert reply.choices[0].finish_reason == "stop"
    assert last_canon(provider).stop == [word]


def test_max_tokens_cut(provider: Env, client: OpenAI) -> None:
    reply = chat(client, messages=USER, max_tokens=2)
    assert reply.choices[0].finish_reason == "length"
    assert last_canon(provider).max_tokens == 2
    chunks = stream(client, messages=USER, max_completion_tokens=2)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


# --- usage and billing -------------------------------------------------------------------------


def test_usage_and_billed_cost(provider: Env, client: OpenAI) -> None:
    case = provider.case
    reply = chat(client, messages=USER)
    assert reply.usage.prompt_tokens == case.prompt_tokens
    assert reply.usage.completion_tokens == case.completion_tokens
    assert reply.usage.total_tokens == case.prompt_tokens + case.completion_tokens
    stream(client, messages=USER)
    rows = provider.gateway.usage_rows(key_of(client))
    assert [r["status"] for r in rows] == [200, 200]
    # test-* is priced at $1/M input and $2/M output: micro-dollars = prompt + 2 * completion.
    expected = case.prompt_tokens + 2 * case.completion_tokens
    assert [r["cost_micro"] for r in rows] == [expected, expected]
    assert [r["prompt_tokens"] for r in rows] == [case.prompt_tokens] * 2
    assert [r["completion_tokens"] for r in rows] == [case.completion_tokens] * 2


# --- upstream failures -------------------------------------------------------------------------


def test_upstream_400_passes_through(provider: Env, client: OpenAI) -> None:
    provider.case.script_error(provider.fake, 400, "FAKE-400: messages.0 is bad", {})
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, messages=USER)
    assert "FAKE-400: messages.0 is bad" in caught.value.message


def test_upstream_401_is_hidden(provider: Env, client: OpenAI) -> None:
    secret_words = f"FAKE-401 invalid key {OPENAI_KEY}"
    provider.case.script_error(provider.fake, 401, secret_words, {})
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client, messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_auth_failed"
    body = caught.value.response.text
    assert "FAKE-401" not in body and "SECRET" not in body and "do-not-leak" not in body


def test_upstream_429_keeps_retry_hint(provider: Env, client: OpenAI) -> None:
    provider.case.script_error(provider.fake, 429, "slow down", {"retry-after": "7"})
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client, messages=USER)
    assert caught.value.response.headers["retry-after"] == "7"


def test_upstream_500_is_502(provider: Env, client: OpenAI) -> None:
    provider.case.script_error(provider.fake, 500, "boom", {})
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client, messages=USER)
    assert caught.value.status_code == 502
    rows = provider.gateway.usage_rows(key_of(client))
    assert rows[-1]["cost_micro"] == 0


def test_malformed_body_is_502(provider: Env, client: OpenAI) -> None:
    provider.case.script_malformed(provider.fake)
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client, messages=USER)
    assert caught.value.status_code == 502


def test_truncated_stream_ends_with_error(provider: Env, client: OpenAI) -> None:
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(
            model=TRUNCATE_MODEL, messages=USER, stream=True
        ):
            received.append(chunk)
    assert "ended before it was complete" in str(caught.value.message)
    assert streamed_text(received), "text before the cut is delivered"
    rows = provider.gateway.usage_rows(key_of(client))
    assert rows[-1]["status"] == 502
