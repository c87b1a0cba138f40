"""Fixtures and shared data for the Anthropic-in-front tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from anthropic import Anthropic
from anthropic.types import MessageParam, ToolParam

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import Gateway

ClaudeFactory = Callable[..., Anthropic]
HI: list[MessageParam] = [{"role": "user", "content": "hi"}]
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def claude() -> Iterator[ClaudeFactory]:
    """Make sync Anthropic clients pointed at a gateway (closed at teardown)."""
    clients: list[Anthropic] = []

    def make(gateway: Gateway, key: str, **options: Any) -> Anthropic:
        options.setdefault("max_retries", 0)
        if "auth_token" not in options:
            options["api_key"] = key
        client = Anthropic(base_url=gateway.url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def last_body(fake: FakeOpenAI) -> dict[str, Any]:
    assert fake.received, "the upstream was never called"
    body: dict[str, Any] = fake.received[-1].body
    return body
