"""Fixtures for the resilience suite: fault-injection upstreams on real loopback sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.fakes.faulty_upstream import FaultyUpstream
from tests.support import LoopThread

if TYPE_CHECKING:
    from tests.resilience.processes import ServerProcess

UPSTREAM_KEY = "sk-upstream-RESILIENCE-secret-42424242"
MODEL = "test-resilience"


@pytest.fixture
def faulty(loop_thread: LoopThread) -> Iterator[Callable[[str], FaultyUpstream]]:
    """``faulty("a")`` starts a controllable upstream; all are stopped at teardown."""
    started: list[FaultyUpstream] = []

    def make(name: str) -> FaultyUpstream:
        upstream = loop_thread.run(FaultyUpstream(name, seed=len(started) + 1).start())
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        loop_thread.run(upstream.stop())


def channel(upstream: FaultyUpstream, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": upstream.name,
        "type": "openai-compatible",
        "base_url": upstream.base_url,
        "api_key": UPSTREAM_KEY,
        "models": ["test-*"],
    }
    config.update(overrides)
    return config


def fast_settings(**extra: Any) -> dict[str, Any]:
    """Small timeouts so faults resolve in milliseconds, not minutes."""
    settings: dict[str, Any] = {
        "timeouts": {"connect_s": 1.0, "first_byte_s": 2.0, "idle_s": 2.0, "total_s": 30.0},
        "retry": {"max_attempts": 3, "deadline_s": 10.0, "max_retry_after_s": 0.5},
    }
    settings.update(extra)
    return settings


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Real ``sluice serve`` processes started by a test; killed at its end if still running."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()
