"""Routing and retry policy: weights, tiers, never the same channel twice, retry rules."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from sluice.core import FailureKind
from sluice.endpoints import EndpointRegistry, default_specs
from sluice.providers.configs import OpenAICompatibleConfig
from sluice.providers.registry import adapter_for
from sluice.routing import Channel, Router
from sluice.settings import ConfigError
from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.resilience.conftest import channel, fast_settings
from tests.resilience.helpers import body_of, chat, spent

CHAT = EndpointRegistry.of(default_specs())["chat"]

Make = Callable[[str], FaultyUpstream]


class AlwaysHealthy:
    """Every channel available, nothing recorded: routing on its own."""

    def available(self, channel: str, model: str) -> bool:
        return True

    def record_success(self, channel: str, model: str) -> None:
        return None

    def record_failure(self, channel: str, model: str, kind: FailureKind) -> None:
        return None

    def cool_down(self, channel: str, seconds: float) -> None:
        return None

    def cooling_down(self, channel: str) -> bool:
        return False

    def enable(self, channel: str) -> bool:
        return False

    def disable(self, channel: str, reason: str) -> None:
        return None

    def disabled_channels(self) -> list[str]:
        return []

    def snapshot(self, channel: str) -> dict[str, Any]:
        return {"state": "closed", "reason": None}


def _channel(name: str, weight: int = 1, priority: int = 0) -> Channel:
    config = OpenAICompatibleConfig(
        name=name, base_url="http://127.0.0.1:9", models=["m"],
        weight=weight, priority=priority,
    )  # fmt: skip
    adapter = adapter_for(config)
    assert adapter is not None
    return Channel(config=config, adapter=adapter)


def test_weighted_split_over_10000_picks_is_within_2_percent() -> None:
    weights = {"a": 1, "b": 2, "c": 7}
    router = Router([_channel(n, w) for n, w in weights.items()], rng=random.Random(7))
    picks = Counter(next(router.plan("m", CHAT, AlwaysHealthy())).name for _ in range(10_000))
    total = sum(weights.values())
    for name, weight in weights.items():
        observed, expected = picks[name] / 10_000, weight / total
        print(f"channel {name}: weight share {expected:.3f}, observed {observed:.4f}")
        assert abs(observed - expected) <= 0.02


def test_zero_weight_channel_is_only_a_last_resort_in_its_tier() -> None:
    router = Router([_channel("zero", 0), _channel("one", 1)], rng=random.Random(1))
    firsts = {next(router.plan("m", CHAT, AlwaysHealthy())).name for _ in range(500)}
    assert firsts == {"one"}
    assert [c.name for c in router.plan("m", CHAT, AlwaysHealthy())] == ["one", "zero"]


def test_plan_orders_tiers_and_never_repeats_a_channel() -> None:
    channels = [_channel("low1", 5, 0), _channel("high1", 1, 10), _channel("low2", 1, 0),
                _channel("high2", 3, 10), _channel("mid", 1, 5)]  # fmt: skip
    router = Router(channels, rng=random.Random(3))
    for _ in range(1_000):
        names = [c.name for c in router.plan("m", CHAT, AlwaysHealthy())]
        assert len(names) == len(set(names)) == 5
        assert set(names[:2]) == {"high1", "high2"}
        assert names[2] == "mid"
        assert set(names[3:]) == {"low1", "low2"}


def test_failover_moves_to_next_tier_and_never_repicks_a_failed_channel(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a, b, c = faulty("a").set("status"), faulty("b").set("status"), faulty("c")
    gateway = gateway_factory(
        [channel(a, priority=10), channel(b, priority=10), channel(c, priority=0)],
        **fast_settings(),
    )
    key = gateway.create_key("failover", budget_micro=10_000_000)
    for _ in range(5):
        assert chat(gateway, key).status_code == 200
    # Every request tried both tier-10 channels once, then tier 0: exactly one hit each.
    assert len(a.hits) == len(b.hits) == len(c.hits) == 5
    ids = Counter(h.request_id for h in [*a.hits, *b.hits, *c.hits])
    assert len(ids) == 5 and set(ids.values()) == {3}, "one request id per request, upstream"


def test_client_errors_from_upstream_are_not_retried(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a, b = faulty("a").set("status", status=400), faulty("b").set("status", status=400)
    gateway = gateway_factory([channel(a), channel(b)], **fast_settings())
    key = gateway.create_key("client", budget_micro=10_000_000)
    response = chat(gateway, key)
    assert response.status_code == 400
    assert len(a.hits) + len(b.hits) == 1
    assert gateway.usage_rows(key)[0]["cost_micro"] == 0


def test_retry_statuses_are_configurable_and_client_statuses_refused(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    with pytest.raises(ConfigError, match="never retried"):
        gateway_factory([], retry={"retry_on_status": [429, 404]})
    a, b = faulty("a").set("status", status=500), faulty("b").set("status", status=500)
    gateway = gateway_factory(
        [channel(a), channel(b)], **fast_settings(retry={"retry_on_status": [503]})
    )
    key = gateway.create_key("statuses", budget_micro=10_000_000)
    response = chat(gateway, key)
    assert response.status_code == 502 and body_of(response)["error"]["code"] == "upstream_error"
    assert len(a.hits) + len(b.hits) == 1, "500 is not in retry_on_status: no second attempt"


def test_retry_after_is_honoured_without_making_the_client_wait(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    """A 429 with Retry-After fails over at once; the channel is then tried last (not again
    first) until its pause, bounded by max_retry_after_s, is over."""
    a, b = faulty("a").set("rate_limit", retry_after=0.5), faulty("b")
    gateway = gateway_factory(
        [channel(a, priority=1), channel(b)], **fast_settings(retry={"max_retry_after_s": 0.8})
    )
    key = gateway.create_key("retry-after", budget_micro=10_000_000)
    started = time.monotonic()
    assert chat(gateway, key).status_code == 200
    assert time.monotonic() - started < 0.4, "failover must not wait for a different channel"
    assert (len(a.hits), len(b.hits)) == (1, 1)
    # While a rests, b (lower priority) goes first: a is not asked again.
    assert chat(gateway, key).status_code == 200
    assert (len(a.hits), len(b.hits)) == (1, 2)
    time.sleep(0.6)  # the pause is over: a is first again
    a.set("rate_limit", retry_after=120)  # ... and asks for 120 s, capped at 0.8 s
    assert chat(gateway, key).status_code == 200
    assert (len(a.hits), len(b.hits)) == (2, 3)
    time.sleep(0.5)  # still resting
    assert chat(gateway, key).status_code == 200
    assert (len(a.hits), len(b.hits)) == (2, 4)
    time.sleep(0.4)  # 0.9 s > the 0.8 s cap: a is asked first again
    assert chat(gateway, key).status_code == 200
    assert (len(a.hits), len(b.hits)) == (3, 5)


def test_rate_limited_last_resort_is_still_tried(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    """A resting channel is not skipped: when the others fail it is tried, last."""
    a, b = faulty("a").set("rate_limit", retry_after=30), faulty("b")
    gateway = gateway_factory(
        [channel(a, priority=1), channel(b)], **fast_settings(retry={"max_retry_after_s": 30})
    )
    key = gateway.create_key("last-resort", budget_micro=10_000_000)
    assert chat(gateway, key).status_code == 200  # a refuses, b answers; a now rests
    a.set("none")
    b.set("status", status=503)
    assert chat(gateway, key).status_code == 200  # b first (fails), then a
    assert (len(a.hits), len(b.hits)) == (2, 2)


def test_attempt_budget_limits_tries(gateway_factory: GatewayFactory, faulty: Make) -> None:
    ups = [faulty(n).set("status", status=503) for n in "abcd"]
    gateway = gateway_factory([channel(u) for u in ups], **fast_settings(retry={"max_attempts": 2}))
    key = gateway.create_key("budget", budget_micro=10_000_000)
    response = chat(gateway, key)
    assert response.status_code == 502
    assert sum(len(u.hits) for u in ups) == 2


def test_deadline_bounds_slow_upstreams(gateway_factory: GatewayFactory, faulty: Make) -> None:
    ups = [faulty(n).set("slow_first_byte", delay_s=5.0) for n in "ab"]
    gateway = gateway_factory(
        [channel(u) for u in ups],
        **fast_settings(
            retry={"deadline_s": 1.0},
            timeouts={"connect_s": 1.0, "first_byte_s": 3.0, "idle_s": 3.0, "total_s": 30.0},
        ),
    )
    key = gateway.create_key("deadline", budget_micro=10_000_000)
    started = time.monotonic()
    response = chat(gateway, key)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert elapsed < 1.8, f"deadline 1.0 s, answered after {elapsed:.2f} s"
    assert spent(gateway, key) == 0
