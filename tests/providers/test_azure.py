"""Azure OpenAI channels: addressing (pure) and the non-chat endpoints end to end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import orjson
import pytest

from sluice.core import RelayCall
from sluice.endpoints import EndpointRegistry, default_specs
from sluice.providers.azure import DEFAULT_API_VERSION, AzureAdapter
from sluice.providers.configs import AzureConfig
from tests.fakes.azure_upstream import AZURE_KEY, FakeAzure
from tests.support import Gateway, LoopThread

SdkFactory = Callable[..., openai.OpenAI]
SPECS = EndpointRegistry.of(default_specs())


def make_call(endpoint: Any = "chat", stream: bool = False, **body: Any) -> RelayCall:
    body.setdefault("model", "gpt-4o")
    return RelayCall(
        endpoint=endpoint,
        path=SPECS[endpoint].upstream_path,
        body=body,
        raw_body=orjson.dumps(body),
        requested_model=body["model"],
        upstream_model="prod deployment" if body["model"] == "gpt-4o" else body["model"],
        stream=stream,
        client_wants_usage=False,
    )


def channel(**overrides: Any) -> AzureConfig:
    values: dict[str, Any] = {
        "name": "az",
        "base_url": "https://res.openai.azure.com/",
        "api_key": "azure-key-123",
        "model_map": {"gpt-4o": "prod deployment"},
    }
    values.update(overrides)
    return AzureConfig(**values)


def test_addressing_headers_and_versions() -> None:
    adapter = AzureAdapter()
    request = adapter.build_request(make_call(), channel())
    assert request.url == (
        "https://res.openai.azure.com/openai/deployments/prod%20deployment/chat/completions"
        f"?api-version={DEFAULT_API_VERSION}"
    )
    assert request.headers["api-key"] == "azure-key-123"
    assert "authorization" not in request.headers
    request = adapter.build_request(
        make_call("embeddings", model="emb", input="x"),
        channel(base_url="https://res.openai.azure.com/openai", api_version="2025-01-01-preview"),
    )
    assert request.url == (
        "https://res.openai.azure.com/openai/deployments/emb/embeddings"
        "?api-version=2025-01-01-preview"
    )
    endpoints = AzureConfig.capabilities.endpoints
    assert "completions" in endpoints and "moderations" not in endpoints


def test_body_keeps_unknown_fields_and_forces_stream_usage() -> None:
    call = make_call(stream=True, messages=[], some_new_field={"x": 1})
    body = orjson.loads(AzureAdapter().build_request(call, channel()).body)
    assert body["some_new_field"] == {"x": 1}
    assert body["stream_options"] == {"include_usage": True}


def test_stream_drops_prompt_filter_only_chunks() -> None:
    translator = AzureAdapter().stream_translator(make_call(stream=True))
    filter_chunk = (
        b'data: {"choices":[],"created":0,"id":"","model":"","object":"",'
        b'"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}\n\n'
    )
    text_chunk = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    )
    usage_chunk = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
    )
    frames = translator.feed(filter_chunk + text_chunk + usage_chunk + b"data: [DONE]\n\n")
    assert frames == [text_chunk, b"data: [DONE]\n\n"]  # usage stripped: client did not ask
    assert translator.usage is not None and translator.usage.prompt == 3


@pytest.fixture
def fake_azure(loop_thread: LoopThread) -> Iterator[FakeAzure]:
    fake = loop_thread.run(FakeAzure().start())
    yield fake
    loop_thread.run(fake.stop())
    assert not fake.violations, fake.violations


def test_embeddings_completions_and_moderations(
    gateway_factory: Callable[..., Gateway], fake_azure: FakeAzure, sdk: SdkFactory
) -> None:
    gateway = gateway_factory(
        [
            {
                "name": "az",
                "type": "azure",
                "base_url": fake_azure.base_url,
                "api_key": AZURE_KEY,
                "model_map": {"test-embed": "test-embed", "test-model": "test-deployment"},
            }
        ]
    )
    key = gateway.create_key(budget_micro=10_000_000)
    client = sdk(gateway, key)
    vectors = client.embeddings.create(model="test-embed", input=["a", "b"])
    assert len(vectors.data) == 2
    completion = client.completions.create(model="test-model", prompt="Say")
    assert completion.choices[0].text == " world"
    assert fake_azure.deployments_called == ["test-embed", "test-deployment"]
    assert fake_azure.api_versions == [DEFAULT_API_VERSION] * 2
    assert fake_azure.received[0].headers["api-key"] == AZURE_KEY
    with pytest.raises(openai.BadRequestError) as caught:
        client.moderations.create(model="test-model", input="x")
    assert caught.value.code == "unsupported_endpoint"
