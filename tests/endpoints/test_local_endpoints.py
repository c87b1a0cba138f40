"""The embedded default's channel serves what its llama.cpp server serves (chat, completions):
embeddings, moderations and rerank are a 400 ``unsupported_endpoint`` at once, never a 502 from
the server. tests/test_local_model.py checks the same against the real model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAI

MODEL = "smollm2-135m-instruct"


@pytest.mark.parametrize(
    ("path", "body"),
    [("/embeddings", {"input": "hello"}), ("/moderations", {"input": "hello"}),
     ("/rerank", {"query": "q", "documents": ["a"]})],
)  # fmt: skip
def test_the_local_channel_refuses_endpoints_its_server_lacks(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, path: str, body: dict[str, Any]
) -> None:
    # The fake stands in for the managed llama.cpp server: it must never be asked.
    channel = {"name": "local", "type": "local", "models": [MODEL], "stream_usage": False}
    gateway = gateway_factory(
        [channel],
        local_endpoints={"local": fake_openai.base_url},
        pricing={"overrides": {MODEL: {"input": 1.0, "output": 2.0}}},
    )
    key = gateway.create_key("local", budget_micro=1_000_000)
    auth = {"authorization": f"Bearer {key}"}
    url = gateway.base_url + path
    response = httpx.post(url, json={"model": MODEL, **body}, headers=auth)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_endpoint", "model")
    assert fake_openai.received == []
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gateway.base_url}/chat/completions", json=chat, headers=auth).is_success
    assert [r.path for r in fake_openai.received] == ["/v1/chat/completions"]
