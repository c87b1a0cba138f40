"""Small client helpers shared by the resilience tests."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.resilience.conftest import MODEL
from tests.support import Gateway

__all__ = ["chat", "stream_events", "spent", "body_of"]


def chat(
    gateway: Gateway,
    key: str,
    *,
    stream: bool = False,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    payload: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
        **extra,
    }
    headers = {"authorization": f"Bearer {key}", **(headers or {})}
    return httpx.post(
        f"{gateway.base_url}/chat/completions", json=payload, headers=headers, timeout=timeout
    )


def stream_events(response: httpx.Response) -> list[Any]:
    """The JSON payloads of an SSE body (``[DONE]`` as the string)."""
    events: list[Any] = []
    for block in response.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


def spent(gateway: Gateway, key: str) -> int:
    gateway.flush()
    value: int = gateway.key_record(key).spent_micro
    return value


def body_of(response: httpx.Response) -> Any:
    return orjson.loads(response.content)
