"""``/metrics`` and the details of ``/readyz`` name channels, models, costs and upstream errors:
only the holder of ``metrics_token`` (or, with none configured, a local unproxied request) may
read them. ``/healthz`` and the bare readiness status stay open for load balancers.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import ADMIN_KEY, Gateway

TOKEN = "metrics-token-0123456789abcdef"
CHANNEL = "secret-channel-name"


def _gateway(factory: GatewayFactory, fake: FakeOpenAI, **extra: Any) -> Gateway:
    gateway = factory([openai_channel(fake, name=CHANNEL)], **extra)
    key = gateway.create_key("metrics")
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    sent = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert sent.status_code == 200  # so the metrics name the channel and the model
    return gateway


def _assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert CHANNEL not in response.text and "sluice_" not in response.text


REFUSED_AUTH = {
    "none": {},
    "wrong": {"authorization": "Bearer not-the-token"},
    "prefix": {"authorization": f"Bearer {TOKEN[:-1]}"},
    "longer": {"authorization": f"Bearer {TOKEN}x"},
    "basic-scheme": {"authorization": f"Basic {TOKEN}"},
    "bare-scheme": {"authorization": "Bearer"},
    "admin-key": {"authorization": f"Bearer {ADMIN_KEY}"},
    "x-api-key": {"x-api-key": TOKEN},
}


@pytest.mark.parametrize("headers", list(REFUSED_AUTH.values()), ids=list(REFUSED_AUTH))
def test_metrics_refused_without_the_token(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, headers: dict[str, str]
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, metrics_token=TOKEN)
    response = httpx.get(f"{gateway.url}/metrics", headers=headers, timeout=10)
    _assert_refused(response, 401, "invalid_metrics_token")


def test_metrics_served_with_the_token(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, metrics_token=TOKEN)
    response = httpx.get(
        f"{gateway.url}/metrics", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert f'channel="{CHANNEL}"' in response.text


FORWARDED = {
    "x-forwarded-for": {"x-forwarded-for": "203.0.113.9"},
    "x-forwarded-for-loopback": {"x-forwarded-for": "127.0.0.1"},
    "forwarded": {"forwarded": "for=203.0.113.9"},
    "x-real-ip": {"x-real-ip": "203.0.113.9"},
}


@pytest.mark.parametrize("headers", list(FORWARDED.values()), ids=list(FORWARDED))
def test_without_a_token_proxied_requests_are_refused(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, headers: dict[str, str]
) -> None:
    """No token configured: a reverse proxy on the same host must not lend its loopback
    address to the internet."""
    gateway = _gateway(gateway_factory, fake_openai)
    response = httpx.get(f"{gateway.url}/metrics", headers=headers, timeout=10)
    _assert_refused(response, 403, "metrics_token_required")
    ready = httpx.get(f"{gateway.url}/readyz", headers=headers, timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_without_a_token_local_requests_are_served(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    """``make run`` on a laptop: curl localhost:8000/metrics keeps working."""
    gateway = _gateway(gateway_factory, fake_openai)
    response = httpx.get(f"{gateway.url}/metrics", timeout=10)
    assert response.status_code == 200 and f'channel="{CHANNEL}"' in response.text
    ready = httpx.get(f"{gateway.url}/readyz", timeout=10).json()
    assert ready["status"] == "ready" and ready["channels"] == 1


@pytest.mark.parametrize("headers", list(REFUSED_AUTH.values()), ids=list(REFUSED_AUTH))
def test_readyz_without_the_token_has_status_only(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, headers: dict[str, str]
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, metrics_token=TOKEN)
    response = httpx.get(f"{gateway.url}/readyz", headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    assert CHANNEL not in response.text
    assert httpx.get(f"{gateway.url}/healthz", headers=headers, timeout=10).status_code == 200


def test_readyz_details_with_the_token(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, metrics_token=TOKEN)
    headers = {"authorization": f"Bearer {TOKEN}"}
    ready = httpx.get(f"{gateway.url}/readyz", headers=headers, timeout=10).json()
    assert ready["status"] == "ready" and ready["channels"] == 1


def test_metrics_token_guessing_is_throttled(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, metrics_token=TOKEN, auth={"max_failures": 3})
    statuses = [
        httpx.get(
            f"{gateway.url}/metrics", headers={"authorization": f"Bearer guess-{i}"}, timeout=10
        ).status_code
        for i in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]
    right = httpx.get(
        f"{gateway.url}/metrics", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert right.status_code == 429
    assert right.json()["error"]["code"] == "too_many_failed_auth"
    # Readiness for the load balancer is never throttled.
    assert httpx.get(f"{gateway.url}/readyz", timeout=10).json() == {"status": "ready"}
