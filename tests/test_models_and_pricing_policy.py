"""Reasoning-model rewriting for OpenAI channels, the unpriced-model policy, health endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import Gateway

GatewayFactory = Callable[..., Gateway]


def test_reasoning_models_get_openai_rules(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, sdk: Callable[..., Any]
) -> None:
    gateway = gateway_factory([openai_channel(fake_openai, type="openai", models=["o3-mini"])])
    client = sdk(gateway, gateway.create_key())
    client.chat.completions.create(
        model="o3-mini",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        max_tokens=50,
        temperature=0.2,
        top_p=0.5,
    )
    sent = fake_openai.received[0].body
    assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
    assert sent["messages"][0]["role"] == "developer"
    assert "temperature" not in sent and "top_p" not in sent


def test_compatible_channels_get_the_body_untouched(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    key = gateway.create_key()
    raw = b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "x": 1}'
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        content=raw,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert response.status_code == 200
    assert fake_openai.received[0].raw == raw, "no re-serialisation when nothing changes"


@pytest.mark.parametrize("policy", ["reject", "free"])
def test_unpriced_model_policy(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, sdk: Callable[..., Any], policy: str
) -> None:
    gateway = gateway_factory(
        [openai_channel(fake_openai, models=["mystery-model"])],
        pricing={"unpriced_policy": policy},
    )
    key = gateway.create_key(budget_micro=1_000)
    client = sdk(gateway, key)
    messages = [{"role": "user", "content": "hi"}]
    if policy == "reject":
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="mystery-model", messages=messages)
        assert caught.value.code == "model_not_priced"
        assert fake_openai.received == []
    else:
        client.chat.completions.create(model="mystery-model", messages=messages)
        assert gateway.usage_rows(key)[0]["cost_micro"] == 0


def test_health_and_readiness(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["channels"] == 1
