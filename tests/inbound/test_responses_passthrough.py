"""The Responses API passed through to ``openai`` channels: the client's body reaches the
upstream's own ``/v1/responses`` untouched (built-in tools included), answers and events come
back as sent (no ``[DONE]`` added), usage is billed from the Response, and Sluice keeps a copy of
each stored response for the key that made it. A model also served by a channel without
``/responses`` is translated instead."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import ToolParam

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.azure_upstream import AZURE_KEY, FakeAzure
from tests.fakes.openai_upstream import FakeOpenAI
from tests.openapi_schema import validate_openai
from tests.protocol.response_events import validate_frames
from tests.support import Gateway, LoopThread

SdkFactory = Callable[..., openai.OpenAI]
WEB_SEARCH: ToolParam = {"type": "web_search"}


@pytest.fixture
def native(gateway_factory: GatewayFactory, fake_openai: FakeOpenAI) -> Gateway:
    """test-native: only an openai channel (pass-through); test-mixed: an openai channel and
    an openai-compatible one (translated); both on the same fake."""
    openai_type = openai_channel(fake_openai, name="oa", type="openai",
                                 models=["test-native", "test-mixed"])  # fmt: skip
    compatible = openai_channel(fake_openai, name="compat", models=["test-mixed"])
    return gateway_factory([openai_type, compatible])


def test_create_is_forwarded_untouched_and_billed(
    native: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = native.create_key("native", budget_micro=10_000_000)
    client = sdk(native, key)
    raw = client.responses.with_raw_response.create(
        model="test-native", input="hi", tools=[WEB_SEARCH], instructions="Be brief.",
        metadata={"a": "b"},
    )  # fmt: skip
    body = orjson.loads(raw.content)
    validate_openai("Response", body)
    response = raw.parse()
    assert (
        response.id.startswith("resp_fake")
        and response.output_text == "Hello from the fake upstream!"
    )
    sent = fake_openai.received[-1]
    assert sent.path == "/v1/responses"
    assert sent.body == {"model": "test-native", "input": "hi", "tools": [{"type": "web_search"}],
                         "instructions": "Be brief.", "metadata": {"a": "b"}}  # fmt: skip
    assert sent.headers["Authorization"].startswith("Bearer sk-upstream")
    (row,) = native.usage_rows(key)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (13, 6, 3)
    assert row["status"] == 200 and row["endpoint"] == "responses" and row["cost_micro"] > 0
    # Sluice's copy: retrievable by this key only, with its input items.
    assert client.responses.retrieve(response.id).output_text == response.output_text
    items = client.responses.input_items.list(response.id)
    assert [item.type for item in items.data] == ["message"]
    other = sdk(native, native.create_key("other"))
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)


def test_stream_events_pass_through_without_done(native: Gateway, fake_openai: FakeOpenAI) -> None:
    key = native.create_key("native-stream")
    with httpx.Client(timeout=30) as http:
        reply = http.post(
            f"{native.base_url}/responses",
            json={"model": "test-native", "input": "hi", "stream": True},
            headers={"authorization": f"Bearer {key}"},
        )
    assert reply.status_code == 200
    assert b"[DONE]" not in reply.content
    events = validate_frames([reply.content])
    assert events[0]["response"]["id"].startswith("resp_fake")
    assert events[-1]["type"] == "response.completed"
    assert "stream_options" not in fake_openai.received[-1].body  # /responses refuses it
    (row,) = native.usage_rows(key)
    assert row["stream"] is True and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (13, 6)


def test_sdk_stream_and_chain_forwarded(
    native: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    client = sdk(native, native.create_key("chain"))
    with client.responses.stream(model="test-native", input="My name is Ada.") as stream:
        first = stream.get_final_response()
    assert first.output_text == "Hello from the fake upstream!"
    second = client.responses.create(
        model="test-native", input="Name?", previous_response_id=first.id
    )
    # The upstream holds the chain: the id is forwarded, the context is not re-sent.
    assert fake_openai.received[-1].body == {
        "model": "test-native", "input": "Name?", "previous_response_id": first.id}  # fmt: skip
    items = client.responses.input_items.list(second.id, order="asc")
    texts = [item.model_dump()["content"][0]["text"] for item in items.data]
    assert texts == ["My name is Ada.", "Hello from the fake upstream!", "Name?"]


def test_mixed_channels_are_translated(
    native: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    client = sdk(native, native.create_key("mixed"))
    response = client.responses.create(model="test-mixed", input="hi")
    assert response.id.startswith("resp_") and not response.id.startswith("resp_fake")
    assert fake_openai.received[-1].path == "/v1/chat/completions"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="test-mixed", input="hi", tools=[WEB_SEARCH])
    assert caught.value.code == "unsupported_tool"
    # A chain started on a translated model continues translated, even on a native model:
    # the upstream never saw the first response.
    client.responses.create(model="test-native", input="more", previous_response_id=response.id)
    last = fake_openai.received[-1]
    assert last.path == "/v1/chat/completions"
    assert [m["content"] for m in last.body["messages"]] == [
        "hi", "Hello from the fake upstream!", "more"]  # fmt: skip


def test_upstream_refusal_is_passed_on(native: Gateway, sdk: SdkFactory) -> None:
    key = native.create_key("refused")
    client = sdk(native, key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="test-native", input="hi", extra_body={"stream_options": {"include_usage": True}}
        )
    assert caught.value.code == "unknown_parameter"
    (row,) = native.usage_rows(key)
    assert row["status"] == 400 and row["cost_micro"] == 0


def test_truncated_stream_is_an_error_event(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    channel = openai_channel(fake_openai, type="openai", models=["test-native"],
                             headers={"x-fake-truncate": "1"})  # fmt: skip
    gateway = gateway_factory([channel])
    key = gateway.create_key("cut")
    with httpx.Client(timeout=30) as http:
        reply = http.post(
            f"{gateway.base_url}/responses",
            json={"model": "test-native", "input": "hi", "stream": True},
            headers={"authorization": f"Bearer {key}"},
        )
    events: list[dict[str, Any]] = validate_frames([reply.content])
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "upstream_stream_truncated"
    (row,) = gateway.usage_rows(key)
    assert row["status"] == 502


@pytest.fixture
def fake_azure(loop_thread: LoopThread) -> Iterator[FakeAzure]:
    fake = loop_thread.run(FakeAzure().start())
    yield fake
    loop_thread.run(fake.stop())
    assert not fake.violations, fake.violations


def test_azure_channels_pass_through_to_the_v1_api(
    gateway_factory: GatewayFactory, fake_azure: FakeAzure, sdk: SdkFactory
) -> None:
    channel = {"name": "az", "type": "azure", "base_url": fake_azure.base_url,
               "api_key": AZURE_KEY, "model_map": {"test-az": "test-deployment"}}  # fmt: skip
    gateway = gateway_factory([channel])
    key = gateway.create_key("azure")
    client = sdk(gateway, key)
    created = client.responses.create(model="test-az", input="hi", tools=[WEB_SEARCH])
    assert created.output_text == "Hello from the fake upstream!"
    sent = fake_azure.received[-1]
    assert sent.path == "/openai/v1/responses"
    assert sent.body["model"] == "test-deployment"  # the deployment, by model_map
    assert sent.body["tools"] == [{"type": "web_search"}]
    with client.responses.stream(model="test-az", input="again",
                                 previous_response_id=created.id) as stream:  # fmt: skip
        final = stream.get_final_response()
    assert final.status == "completed"
    assert fake_azure.received[-1].body["previous_response_id"] == created.id
    assert fake_azure.deployments_called == ["test-deployment"] * 2
    rows = gateway.usage_rows(key)
    assert [(r["endpoint"], r["prompt_tokens"], r["status"]) for r in rows] == [
        ("responses", 13, 200)] * 2  # fmt: skip
