"""Errors and token counting on the Anthropic routes, through the official Anthropic SDK:
every failure must reach the SDK as the right exception with Anthropic's error shape."""

from __future__ import annotations

import time

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI, Scripted
from tests.inbound.conftest import HI, WEATHER_TOOL, ClaudeFactory
from tests.support import Gateway


def test_count_tokens_is_local_and_free(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    key = gateway.create_key("count")
    client = claude(gateway, key)
    counted = client.messages.count_tokens(
        model="test-model", system="Be brief.", messages=HI, tools=[WEATHER_TOOL]
    )
    expected = gateway.state.tokens.count_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER_TOOL["input_schema"],
                    "description": "Weather for a city.",
                },
            }
        ],
    )
    assert counted.input_tokens == expected > 0
    assert fake_openai.received == [] and gateway.usage_rows(key) == []
    with pytest.raises(anthropic.AuthenticationError):
        claude(gateway, "sk-wrong-key-0000000000").messages.count_tokens(
            model="test-model", messages=HI
        )
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=HI)


def test_errors_are_anthropic_shaped(gateway: Gateway, claude: ClaudeFactory) -> None:
    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        claude(gateway, "sk-not-a-real-key-123").messages.create(
            model="test-model", max_tokens=10, messages=HI
        )
    assert bad_key.value.status_code == 401
    assert bad_key.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
        "request_id": bad_key.value.request_id,
    }
    client = claude(gateway, gateway.create_key("errors"))
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="claude-unknown", max_tokens=10, messages=HI)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    restricted = claude(gateway, gateway.create_key("restricted", allowed_models=["test-model"]))
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        restricted.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HI)
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad_role:
        client.messages.create(
            model="test-model",
            max_tokens=10,
            messages=[{"role": "robot", "content": "x"}],  # type: ignore[list-item, misc]  # on purpose
        )
    assert bad_role.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages.0.role" in bad_role.value.message


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "parse the JSON"),
        (b'{"model": "test-model", "messages": []}', "max_tokens: Field required"),
        (b'{"model": "test-model", "max_tokens": 5, "messages": "hi"}', "valid list"),
        (b'{"model": "test-model", "max_tokens": -1, "messages": []}', "max_tokens"),
    ],
)
def test_malformed_bodies_are_400(gateway: Gateway, payload: bytes, fragment: str) -> None:
    key = gateway.create_key("malformed")
    with httpx.Client() as http:
        response = http.post(
            f"{gateway.url}/v1/messages",
            content=payload,
            headers={"x-api-key": key, "content-type": "application/json"},
        )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"]


def test_upstream_client_error_passes_through(
    gateway: Gateway, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    error = {"error": {"message": "context too long", "type": "invalid_request_error"}}
    fake_openai.script.append(Scripted(status=400, body=orjson.dumps(error)))
    key = gateway.create_key("upstream-400")
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(gateway, key).messages.create(model="test-model", max_tokens=10, messages=HI)
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "context too long" in caught.value.message
    assert gateway.usage_rows(key)[0]["status"] == 400


def test_truncated_upstream_stream_raises_in_sdk(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, claude: ClaudeFactory
) -> None:
    gateway = gateway_factory([openai_channel(fake_openai, headers={"x-fake-truncate": "1"})])
    key = gateway.create_key("truncated")
    client = claude(gateway, key)
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="test-model", max_tokens=100, messages=HI) as stream:
            seen.extend(stream.text_stream)
    assert seen == ["Hello", " from"]
    assert "ended before it was complete" in str(caught.value)
    row = gateway.usage_rows(key)[0]
    assert row["status"] == 502 and row["stream"] is True


def test_client_disconnect_mid_stream_bills_the_upstream_usage(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    slow = openai_channel(fake_openai, headers={"x-fake-chunk-delay": "0.2"})
    gateway = gateway_factory([slow])
    key = gateway.create_key("leaver", budget_micro=10_000_000)
    payload = {"model": "test-model", "max_tokens": 100, "messages": HI, "stream": True}
    deltas = 0
    with httpx.Client(timeout=10) as http:
        with http.stream(
            "POST", f"{gateway.url}/v1/messages", json=payload, headers={"x-api-key": key}
        ) as response:
            for line in response.iter_lines():
                deltas += line == "event: content_block_delta"
                if deltas == 2:
                    break
    rows = gateway.usage_rows(key)
    for _ in range(100):
        if rows:
            break
        time.sleep(0.05)
        rows = gateway.usage_rows(key)
    # The upstream was read on after the client left, and its own usage billed (the fake
    # reports 11 prompt tokens and one per word), not the words relayed before the hang-up.
    assert fake_openai.disconnects == 0, "the upstream was cut instead of read for its usage"
    assert len(rows) == 1 and rows[0]["status"] == 499
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (11, 6)


def test_insufficient_budget_is_a_rate_limit_error(gateway: Gateway, claude: ClaudeFactory) -> None:
    key = gateway.create_key("poor", budget_micro=1)
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude(gateway, key).messages.create(model="test-model", max_tokens=1000, messages=HI)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
