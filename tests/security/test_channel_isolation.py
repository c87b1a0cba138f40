"""One tenant must not take a shared channel down (issue 16).

An upstream 401/402/403 can belong to one request only: OpenAI answers 403 for a model the
key's project lacks, some providers 402 for a huge ``max_tokens``. Such an answer must not
disable the channel (nor, through failover, several channels) for every tenant. The channel is
disabled only when its own test request (the health probe) fails the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from sluice.core import FailureKind
from sluice.health import MemoryChannelHealth, ProbeGate
from sluice.settings import CircuitConfig
from tests.conftest import GatewayFactory
from tests.security.conftest import Make
from tests.security.scripted_upstream import (
    Handler,
    ScriptedUpstream,
    openai_error,
    openai_reply,
)
from tests.support import Gateway

UPSTREAM_KEY = "sk-upstream-ISOLATION-secret-31313131"
UPSTREAM_WORDS = "project proj_Xy12 of org-Secret"  # must never reach the client


def _channel(name: str, upstream: ScriptedUpstream, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name,
        "type": "openai-compatible",
        "base_url": upstream.v1,
        "api_key": UPSTREAM_KEY,
        # The first concrete name is the probe's model (no test_model set).
        "models": ["test-open", "test-secret"],
    }
    config.update(overrides)
    return config


def _chat(gateway: Gateway, key: str, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}"})  # fmt: skip


def _state(gateway: Gateway, channel: str) -> str:
    found: str = gateway.state.health.snapshot(channel)["state"]
    return found


def _settle_probes(gateway: Gateway) -> None:
    """Wait until no background task (confirmation probe, settlement) is running."""
    deadline = time.monotonic() + 10
    while gateway.state.background and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not gateway.state.background, "a confirmation probe never finished"


def _wait_for_state(gateway: Gateway, channel: str, wanted: str) -> None:
    deadline = time.monotonic() + 10
    while _state(gateway, channel) != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _state(gateway, channel) == wanted


# --- request-only failures: the channel stays up ---------------------------------------------


@dataclass(frozen=True)
class RequestOnly:
    """An upstream answer that concerns one request, and the request that provokes it."""

    name: str
    status: int
    code: str | None
    provoke: dict[str, Any]  # what the client sends (model, parameters)
    expected_code: str  # what the client gets

    def provoked(self, body: dict[str, Any]) -> bool:
        return all(body.get(field) == value for field, value in self.provoke.items())


REQUEST_ONLY = [
    RequestOnly("403 for one model", 403, "model_not_found", {"model": "test-secret"},
                "upstream_auth_failed"),
    RequestOnly("401 for one model", 401, "invalid_api_key", {"model": "test-secret"},
                "upstream_auth_failed"),
    RequestOnly("402 for a huge max_tokens", 402, None,
                {"model": "test-open", "max_tokens": 1_000_000}, "upstream_billing_error"),
    RequestOnly("429 insufficient_quota for a huge max_tokens", 429, "insufficient_quota",
                {"model": "test-open", "max_tokens": 1_000_000}, "upstream_billing_error"),
]  # fmt: skip


def _request_only(case: RequestOnly) -> Handler:
    async def handle(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if case.provoked(body):
            return openai_error(case.status, f"Denied for {UPSTREAM_WORDS}", case.code)
        return openai_reply(str(body.get("model")))

    return handle


@pytest.mark.parametrize("case", REQUEST_ONLY, ids=lambda c: c.name)
def test_request_only_failure_keeps_shared_channels_enabled(
    gateway_factory: GatewayFactory, scripted: Make, case: RequestOnly
) -> None:
    # Two channels answer the same way, so failover takes each request to both: before the
    # fix, a single request disabled both channels for every tenant.
    a, b = scripted(_request_only(case)), scripted(_request_only(case))
    gateway = gateway_factory([_channel("a", a, priority=10), _channel("b", b)])
    tenant, other = gateway.create_key("hostile"), gateway.create_key("other")
    for _ in range(12):
        response = _chat(gateway, tenant, **case.provoke)
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == case.expected_code
        assert "proj_Xy12" not in response.text and UPSTREAM_KEY not in response.text
    _settle_probes(gateway)
    assert _state(gateway, "a") == "closed" and _state(gateway, "b") == "closed"
    assert gateway.state.health.disabled_channels() == []
    # Probed once each (single flight, then spaced by circuit.confirm_interval_s), with the
    # channel's own test request, not the tenant's.
    for upstream in (a, b):
        assert len(upstream.probe_hits) == 1
        probe = upstream.probe_hits[0].body
        assert probe["model"] == "test-open" and probe["max_tokens"] == 1
    # Other tenants and other requests keep using the preferred channel.
    before = len(a.client_hits)
    for _ in range(3):
        ok = _chat(gateway, other, "test-open")
        assert ok.status_code == 200, ok.text
    assert len(a.client_hits) == before + 3


def test_tenant_failure_does_not_open_breakers(gateway_factory: GatewayFactory,
                                               scripted: Make) -> None:  # fmt: skip
    """More request-only 403s than ``consecutive_failures``: no breaker opens either."""
    case = REQUEST_ONLY[0]
    a = scripted(_request_only(case))
    gateway = gateway_factory([_channel("a", a)], circuit={"consecutive_failures": 2})
    tenant = gateway.create_key("hostile")
    for _ in range(6):
        assert _chat(gateway, tenant, "test-secret").status_code == 502
    _settle_probes(gateway)
    assert _state(gateway, "a") == "closed"
    snapshot = gateway.state.health.snapshot("a")
    assert snapshot["models"] == {} and snapshot["consecutive_failures"] == 0
    assert _chat(gateway, tenant, "test-open").status_code == 200


# --- channel-wide failures: the probe confirms and the channel is disabled -------------------


DEAD = [
    pytest.param(401, "invalid_api_key", id="401 invalid key"),
    pytest.param(403, "unsupported_country_region_territory", id="403 for everything"),
    pytest.param(402, None, id="402 no credit"),
    pytest.param(429, "insufficient_quota", id="429 insufficient_quota"),
]


@pytest.mark.parametrize(("status", "code"), DEAD)
def test_channel_wide_failure_disables_after_the_probe_confirms(
    gateway_factory: GatewayFactory, scripted: Make, status: int, code: str | None
) -> None:
    async def dead(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return openai_error(status, f"Key of {UPSTREAM_WORDS} refused", code)

    async def healthy(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return openai_reply(str(body.get("model")))

    a, b = scripted(dead), scripted(healthy)
    gateway = gateway_factory([_channel("a", a, priority=10), _channel("b", b)])
    key = gateway.create_key("tenant")
    first = _chat(gateway, key, "test-secret")
    assert first.status_code == 200, "failover to the healthy channel"
    _wait_for_state(gateway, "a", "disabled")
    snapshot = gateway.state.health.snapshot("a")
    assert "confirmed by a health probe" in snapshot["reason"]
    assert len(a.probe_hits) == 1 and a.probe_hits[0].body["model"] == "test-open"
    assert _state(gateway, "b") == "closed"
    served = len(a.client_hits)
    for _ in range(3):
        assert _chat(gateway, key, "test-open").status_code == 200
    assert len(a.client_hits) == served, "a disabled channel gets no more requests"


def test_test_model_is_what_the_probe_asks_for(gateway_factory: GatewayFactory,
                                               scripted: Make) -> None:  # fmt: skip
    """``test_model`` picks the probe's model: here the one model the key may use."""

    async def handle(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if body.get("model") != "test-secret":
            return openai_error(403, "not in this project", "model_not_found")
        return openai_reply("test-secret")

    a = scripted(handle)
    gateway = gateway_factory([_channel("a", a, test_model="test-secret")])
    key = gateway.create_key("tenant")
    assert _chat(gateway, key, "test-open").status_code == 502
    _settle_probes(gateway)
    assert [hit.body["model"] for hit in a.probe_hits] == ["test-secret"]
    assert _state(gateway, "a") == "closed"
    assert _chat(gateway, key, "test-secret").status_code == 200


def test_glob_only_channel_is_never_probed_with_a_tenants_model(
    gateway_factory: GatewayFactory, scripted: Make
) -> None:
    """No concrete model and no ``test_model``: nothing to probe with, so the channel stays up
    (probing with the tenant's model would let a 403 for that model disable it)."""

    async def handle(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if body.get("model") == "test-secret":
            return openai_error(403, "not in this project", "model_not_found")
        return openai_reply(str(body.get("model")))

    a = scripted(handle)
    gateway = gateway_factory([_channel("a", a, models=["test-*"])])
    key = gateway.create_key("tenant")
    assert _chat(gateway, key, "test-secret").status_code == 502
    _settle_probes(gateway)
    assert a.probe_hits == [] and _state(gateway, "a") == "closed"
    assert _chat(gateway, key, "test-open").status_code == 200


# --- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["auth", "billing"])
def test_health_never_disables_on_a_request_failure(kind: FailureKind) -> None:
    health = MemoryChannelHealth(CircuitConfig(consecutive_failures=2))
    for _ in range(50):
        health.record_failure("a", "m", kind)
    assert health.available("a", "m") and health.available("a", "other")
    assert health.disabled_channels() == []
    health.disable("a", "confirmed")
    assert not health.available("a", "m") and health.disabled_channels() == ["a"]


def test_probe_gate_is_single_flight_and_spaced() -> None:
    now = [100.0]
    gate = ProbeGate(clock=lambda: now[0])
    assert gate.begin("a", 30.0)
    assert not gate.begin("a", 30.0), "one probe at a time"
    assert gate.begin("b", 30.0), "per channel"
    gate.end("a")
    assert not gate.begin("a", 30.0), "spaced by the interval"
    now[0] += 30.0
    assert gate.begin("a", 30.0)
