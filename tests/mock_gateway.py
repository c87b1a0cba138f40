"""An in-process gateway whose upstream is ``sluice.upstream_mock.MockUpstream``: no sockets.

The app's lifespan is driven directly and requests go through httpx's ASGI transport. Two
OpenAI-type channels serve ``test-model``: ``a`` (priority 1, tried first) and ``b``. Tests set
``routes["a"]`` / ``routes["b"]`` to the handler of each channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from sluice.app import create_app
from sluice.core import UpstreamRequest
from sluice.endpoints import EndpointSpec
from sluice.state import AppState
from sluice.storage.schema import usage
from sluice.upstream_mock import MockReply, MockUpstream
from tests.support import make_settings

KEY_A = "sk-mock-channel-a-" + "x" * 24
KEY_B = "sk-mock-channel-b-" + "y" * 24
MODEL = "test-model"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def completion(text: str = "hello", prompt: int = 1000, completion_tokens: int = 500) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens,
            },
        }
    )


def chunk(text: str) -> str:
    delta = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return orjson.dumps(
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
         "choices": [delta]}
    ).decode()  # fmt: skip


@dataclass
class MockGateway:
    client: httpx.AsyncClient
    state: AppState
    key: str
    routes: dict[str, Callable[[UpstreamRequest], MockReply]]
    upstream: MockUpstream

    def channel_of(self, request: UpstreamRequest) -> str:
        return "a" if "//a.mock" in request.url else "b"

    async def chat(self, **body: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.key}"}
        return await self.client.post(
            "/v1/chat/completions", json={**CHAT, **body}, headers=headers
        )

    async def usage_rows(self) -> list[dict[str, Any]]:
        for _ in range(200):
            if not self.state.background:
                break
            await asyncio.sleep(0.005)
        await self.state.usage_sink.flush()
        async with self.state.engine.connect() as conn:
            rows = await conn.execute(select(usage).order_by(usage.c.id))
            return [dict(r) for r in rows.mappings().all()]


def answer(reply: MockReply) -> Callable[[UpstreamRequest], MockReply]:
    return lambda _request: reply


def usage_chunk(prompt: int, completion_tokens: int) -> str:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
             "total_tokens": prompt + completion_tokens}  # fmt: skip
    return orjson.dumps(
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
         "choices": [], "usage": usage}
    ).decode()  # fmt: skip


@contextlib.asynccontextmanager
async def mock_gateway(
    tmp_path: Path,
    endpoint_specs: Sequence[EndpointSpec] | None = None,
    channel_options: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[MockGateway]:
    channels = [
        {"name": name, "type": "openai", "base_url": f"http://{name}.mock/v1", "api_key": key,
         "models": [MODEL], "priority": priority, **(channel_options or {})}
        for name, key, priority in (("a", KEY_A, 1), ("b", KEY_B, 0))
    ]  # fmt: skip
    app = create_app(make_settings(tmp_path, channels, **settings), endpoint_specs=endpoint_specs)
    routes: dict[str, Callable[[UpstreamRequest], MockReply]] = {}
    upstream = MockUpstream(lambda request: routes[gw.channel_of(request)](request))
    async with app.router.lifespan_context(app):
        state: AppState = app.state.sluice
        state.upstream = upstream
        key = (await state.keys.create("engine")).secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            gw = MockGateway(client, state, key, routes, upstream)
            yield gw
