"""Shared fixtures: a background loop thread, fake upstreams, and gateways on real sockets."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from sluice.endpoints import EndpointSpec
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import Gateway, LoopThread, make_settings, start_gateway


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a real service is absent, except under CI=true where absence is a failure."""
    if service_reachable(host, port):
        return
    skip_unless_ci(f"{name} is not reachable on {host}:{port}")


def skip_unless_ci(message: str) -> NoReturn:
    """A needed service or binary is absent: skip, except under CI=true where it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (required under CI=true)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@pytest.fixture
def fake_openai(loop_thread: LoopThread) -> Iterator[FakeOpenAI]:
    fake = loop_thread.run(FakeOpenAI().start())
    yield fake
    loop_thread.run(fake.stop())


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def gateway_factory(loop_thread: LoopThread, tmp_path: Path) -> Iterator[GatewayFactory]:
    started: list[Gateway] = []

    def factory(
        channels: list[dict[str, Any]],
        local_endpoints: dict[str, str] | None = None,
        endpoint_specs: Sequence[EndpointSpec] | None = None,
        **extra: Any,
    ) -> Gateway:
        settings = make_settings(tmp_path, channels, **extra)
        gateway = start_gateway(loop_thread, settings, local_endpoints, endpoint_specs)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


def openai_channel(fake: FakeOpenAI, **overrides: Any) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "name": "fake-openai",
        "type": "openai-compatible",
        "base_url": fake.base_url,
        "api_key": "sk-upstream-SECRET-do-not-leak-123456",
        "models": ["test-*", "gpt-4o-mini", "text-embedding-3-small", "omni-moderation-latest"],
    }
    channel.update(overrides)
    return channel


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, fake_openai: FakeOpenAI) -> Gateway:
    return gateway_factory([openai_channel(fake_openai)])


@pytest.fixture
def sdk() -> Iterator[Callable[..., Any]]:
    """Make sync OpenAI clients (closed at teardown): ``sdk(gateway, key)``."""
    from openai import OpenAI

    clients: list[OpenAI] = []

    def make(gateway: Gateway, key: str, **options: Any) -> OpenAI:
        options.setdefault("max_retries", 0)
        client = OpenAI(base_url=gateway.base_url, api_key=key, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def fake_anthropic(loop_thread: LoopThread) -> Iterator[FakeAnthropic]:
    """A fresh fake Anthropic API; the test fails if Sluice sent it anything the real one
    would reject."""
    fake = loop_thread.run(FakeAnthropic().start())
    yield fake
    loop_thread.run(fake.stop())
    assert not fake.violations, fake.violations


# Tests that start servers or processes, or need PostgreSQL/Redis, are the slow tier; the rest
# (`pytest -m "not slow"`) are unit tests that run in seconds. Marked by what a test uses, so
# a new test that starts a gateway is classed correctly without anyone remembering a marker.
_SLOW_FIXTURES = frozenset({"loop_thread", "pg_url", "redis_url", "private_redis"})
_SLOW_DIRECTORIES = frozenset({"scale", "resilience", "bench", "conformance", "inbound"})
_SLOW_MODULES = frozenset({"test_cli_serve", "test_worker_imports", "test_packaging"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        slow = (
            _SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            or _SLOW_DIRECTORIES.intersection(path.parts)
            or path.stem in _SLOW_MODULES
        )
        if slow:
            item.add_marker(pytest.mark.slow)
