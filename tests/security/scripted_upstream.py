"""A loopback upstream whose every answer a test scripts: ``ScriptedUpstream(handler)``.

The handler gets the request and its decoded JSON body and returns the response, so one test
can answer 403 for one model only, send a 20 MiB body in pieces, or an endless SSE event.
Every request is recorded (``hits``); a request without ``x-request-id`` is a Sluice probe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import serve_on_loopback

__all__ = ["Handler", "Hit", "ScriptedUpstream", "openai_error", "openai_reply"]

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Hit:
    path: str
    body: dict[str, Any]
    request_id: str | None

    @property
    def probe(self) -> bool:
        return self.request_id is None


def openai_error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def openai_reply(model: str, text: str = "pong") -> web.Response:
    body = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }  # fmt: skip
    return web.Response(body=orjson.dumps(body), content_type="application/json")


class ScriptedUpstream:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.hits: list[Hit] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """Root of the fake; OpenAI-type channels add ``/v1`` themselves (see ``v1``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    @property
    def client_hits(self) -> list[Hit]:
        return [hit for hit in self.hits if not hit.probe]

    @property
    def probe_hits(self) -> list[Hit]:
        return [hit for hit in self.hits if hit.probe]

    async def start(self) -> ScriptedUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.hits.append(Hit(request.path, body, request.headers.get("x-request-id")))
        return await self.handler(request, body)
