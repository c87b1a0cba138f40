"""Circuit breakers per channel and per channel+model, disabled channels, admin view, probes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from sluice.health import CircuitBreaker, MemoryChannelHealth
from sluice.settings import CircuitConfig
from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.resilience.conftest import channel, fast_settings
from tests.resilience.helpers import chat
from tests.support import Gateway

Make = Callable[[str], FaultyUpstream]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _config(**overrides: Any) -> CircuitConfig:
    values: dict[str, Any] = {"consecutive_failures": 3, "error_rate": 0.5, "window_s": 10,
                              "min_requests": 10, "cooldown_s": 5}  # fmt: skip
    values.update(overrides)
    return CircuitConfig(**values)


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    breaker = CircuitBreaker(_config())
    for _ in range(2):
        breaker.on_failure(0)
    assert breaker.state == "closed" and breaker.allow(0)
    breaker.on_failure(1)
    # mypy keeps the narrowing to "closed" across on_failure(), which changed the state.
    assert breaker.state == "open" and not breaker.allow(2) and not breaker.allow(5.9)  # type: ignore[comparison-overlap]
    breaker.on_success(3)  # a late answer to a request sent before it opened
    assert breaker.state == "open"
    assert breaker.allow(6.1) and breaker.state == "half_open"  # the one probe
    assert not breaker.allow(6.2), "only one probe at a time"
    breaker.on_failure(6.3)
    assert breaker.state == "open" and not breaker.allow(7)
    assert breaker.allow(11.5)
    breaker.on_success(11.6)
    assert breaker.state == "closed" and breaker.allow(11.7)


def test_breaker_opens_on_error_rate_over_the_window() -> None:
    breaker = CircuitBreaker(_config(consecutive_failures=100))
    for i in range(9):
        (breaker.on_failure if i % 2 else breaker.on_success)(i * 0.1)
    assert breaker.state == "closed", "fewer than min_requests outcomes"
    breaker.on_failure(1.0)  # 5 failures of 10 = 50%
    assert breaker.state == "open"  # type: ignore[comparison-overlap]  # as above
    old = CircuitBreaker(_config(consecutive_failures=100, error_rate=0.6))
    for i in range(10):
        old.on_failure(i * 0.01)
        old.on_success(i * 0.01)
    assert old.state == "closed"  # at most 6 of 11 failed: under 60%
    old.on_success(50)  # the window slid past every failure
    old.on_failure(50.1)
    assert old.state == "closed"


def test_health_ignores_client_errors_and_disables_dead_channels() -> None:
    clock = Clock()
    changes: list[tuple[str, str | None, str]] = []
    health = MemoryChannelHealth(_config(), clock=clock, on_change=lambda *c: changes.append(c))
    for _ in range(10):
        health.record_failure("a", "m", "client")
    assert health.available("a", "m") and health.snapshot("a")["state"] == "closed"
    # An auth failure alone may be the request's (tests/security/test_channel_isolation.py):
    # only a confirming health probe disables the channel.
    health.record_failure("a", "m", "auth")
    assert health.available("a", "m") and health.snapshot("a")["state"] == "closed"
    health.disable("a", "upstream auth failure, confirmed by a health probe")
    snap = health.snapshot("a")
    assert snap["state"] == "disabled" and "auth" in snap["reason"]
    assert not health.available("a", "m") and health.disabled_channels() == ["a"]
    assert ("a", None, "disabled") in changes
    clock.now += 3600  # disabled is not a cool-down: it stays off until enabled
    assert not health.available("a", "m")
    assert health.enable("a") and health.available("a", "m")


def test_model_breaker_trips_without_taking_the_channel_down() -> None:
    health = MemoryChannelHealth(_config(), clock=Clock())
    for _ in range(3):
        health.record_failure("a", "broken", "server")
        health.record_success("a", "fine")
    assert not health.available("a", "broken")
    assert health.available("a", "fine")
    snap = health.snapshot("a")
    assert snap["state"] == "closed" and snap["models"] == {"broken": "open"}
    assert snap["recent"]["failures"] == 3 and snap["recent"]["by_kind"] == {"server": 3}


def _admin(gateway: Gateway, method: str, path: str) -> Any:
    response = httpx.request(method, gateway.url + path, timeout=10,
                             headers={"authorization": f"Bearer {gateway.admin_key}"})  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def _health(gateway: Gateway, name: str) -> dict[str, Any]:
    rows = _admin(gateway, "GET", "/admin/channels")["data"]
    found: dict[str, Any] = next(r for r in rows if r["name"] == name)["health"]
    return found


def _wait_for_state(gateway: Gateway, name: str, state: str) -> dict[str, Any]:
    for _ in range(500):
        view = _health(gateway, name)
        if view["state"] == state:
            return view
        time.sleep(0.02)
    raise AssertionError(f"channel {name} is {view['state']}, not {state}")


def test_open_circuit_is_skipped_then_probed_and_closed(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a, b = faulty("a").set("status", status=503), faulty("b")
    gateway = gateway_factory(
        [channel(a, priority=10), channel(b)],
        **fast_settings(circuit={"consecutive_failures": 3, "cooldown_s": 0.5}),
    )
    key = gateway.create_key("circuit", budget_micro=10_000_000)
    for _ in range(6):
        assert chat(gateway, key).status_code == 200
    assert len(a.hits) == 3, "the circuit opened after 3 consecutive failures"
    view = _health(gateway, "a")
    assert view["state"] == "open" and view["recent"]["by_kind"] == {"server": 3}
    time.sleep(0.6)
    a.set("none")
    assert chat(gateway, key).status_code == 200  # the half-open probe, answered by a
    assert len(a.hits) == 4 and _health(gateway, "a")["state"] == "closed"


def test_dead_upstream_key_disables_until_admin_enables(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a, b = faulty("a").set("auth"), faulty("b")
    # A concrete model (or test_model) to probe: a glob-only channel is never auto-disabled.
    gateway = gateway_factory(
        [channel(a, priority=10, models=["test-resilience"]), channel(b)], **fast_settings()
    )
    key = gateway.create_key("auth", budget_micro=10_000_000)
    assert chat(gateway, key).status_code == 200
    view = _wait_for_state(gateway, "a", "disabled")  # once its health probe failed too
    assert "auth" in view["reason"] and "probe" in view["reason"]
    assert [h.request_id is None for h in a.hits] == [False, True], "one request, one probe"
    for _ in range(2):
        assert chat(gateway, key).status_code == 200
    assert len(a.hits) == 2, "a disabled channel gets no requests"
    a.set("none")
    enabled = _admin(gateway, "POST", "/admin/channels/a/enable")
    assert enabled["was_disabled"] is True and enabled["health"]["state"] == "closed"
    assert chat(gateway, key).status_code == 200 and len(a.hits) == 3


def test_health_probe_re_enables_a_recovered_channel(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a, b = faulty("a").set("billing"), faulty("b")
    gateway = gateway_factory(
        [channel(a, priority=10, models=["test-resilience"]), channel(b)],
        **fast_settings(circuit={"probe_interval_s": 0.2}),
    )
    key = gateway.create_key("probe", budget_micro=10_000_000)
    assert chat(gateway, key).status_code == 200
    _wait_for_state(gateway, "a", "disabled")  # the confirmation probe failed too
    time.sleep(0.5)
    assert _health(gateway, "a")["state"] == "disabled", "the probe keeps failing"
    a.set("none")
    for _ in range(50):
        if _health(gateway, "a")["state"] == "closed":
            break
        time.sleep(0.1)
    assert _health(gateway, "a")["state"] == "closed"
    probes = [h for h in a.hits if h.request_id is None]
    assert probes, "the probe is the admin test request (no client request id)"
