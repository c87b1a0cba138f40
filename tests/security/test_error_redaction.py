"""Upstream error messages reach tenants only after redaction, on every path.

An upstream's error text is often worth passing on ("maximum context length is 8192 tokens"),
but it can carry the operator's secrets: the channel's own key echoed back, another key, and
OpenAI's organisation and project ids ("You exceeded your current quota … organization
org-…"). One scripted upstream per provider type answers with such a message as an HTTP error,
as a stream's first event and in the middle of a stream; clients speaking OpenAI's API and
Anthropic's (``/v1/messages``) must see none of the secrets, and still the useful part.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.fakes.server import serve_on_loopback
from tests.support import Gateway, LoopThread

CHANNEL_KEY = "chan-7Hq2Lx9Vb3Nw5Rt8Kp4"  # not key-shaped: only known as the channel's key
OTHER_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrSt123456"
ORG_ID = "org-Abc123XyZ789"
PROJECT_ID = "proj_Q1w2E3r4T5y6U7i8"
SECRETS = [CHANNEL_KEY, OTHER_KEY, ORG_ID, PROJECT_ID]
USEFUL = "check your plan and billing details"
MESSAGE = (
    f"Incorrect API key provided: {CHANNEL_KEY}. Also tried {OTHER_KEY}. You exceeded your "
    f"current quota for organization {ORG_ID} in project {PROJECT_ID}; please {USEFUL}."
)
# The channel's key straddling the 500-character cut of a passed-through message.
AT_THE_CUT = "x" * 490 + " " + CHANNEL_KEY + " " + USEFUL

PROVIDERS = ["openai", "azure", "anthropic", "gemini"]
MODES = ["http-400", "http-429", "stream-first-event", "stream-mid"]
MODEL = "test-model"


class ScriptedUpstream:
    """Every provider's chat endpoint on one loopback port, failing as ``mode`` says."""

    def __init__(self) -> None:
        self.mode = "http-400"
        self.message = MESSAGE
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> ScriptedUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/openai/deployments/{name}/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1beta/models/{tail:.*}", self._gemini)
        self.runner, self.port = await serve_on_loopback(app)
        return self

    def channel(self, provider: str) -> dict[str, Any]:
        root = f"http://127.0.0.1:{self.port}"
        base = {"openai": root + "/v1"}.get(provider, root)
        kind = "openai-compatible" if provider == "openai" else provider
        return {"name": "up", "type": kind, "base_url": base, "api_key": CHANNEL_KEY,
                "models": [MODEL]}  # fmt: skip

    def _status(self) -> int:
        return 429 if self.mode == "http-429" else 400

    async def _sse(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in events if self.mode == "stream-mid" else events[-1:]:
            await response.write(event)
        await response.write_eof()
        return response

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        if self.mode.startswith("http"):
            code = "rate_limit_exceeded" if self.mode == "http-429" else "invalid_value"
            error: dict[str, Any] = {
                "message": self.message,
                "type": "invalid_request_error",
                "code": code,
            }
            return web.json_response({"error": error}, status=self._status())
        choice = {"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}
        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                 "choices": [choice]}  # fmt: skip
        error = {"error": {"message": self.message, "type": "server_error", "code": None}}
        return await self._sse(request, [_data(chunk), _data(error)])

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        if self.mode.startswith("http"):
            kind = "rate_limit_error" if self.mode == "http-429" else "invalid_request_error"
            body = {"type": "error", "error": {"type": kind, "message": self.message}}
            return web.json_response(body, status=self._status())
        start = {"type": "message_start", "message": {"id": "msg_1", "model": MODEL,
                 "usage": {"input_tokens": 5, "output_tokens": 1}}}  # fmt: skip
        block = {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}}  # fmt: skip
        delta = {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": "Hi"}}  # fmt: skip
        error = {"type": "error", "error": {"type": "api_error", "message": self.message}}
        events = [_event("message_start", start), _event("content_block_start", block),
                  _event("content_block_delta", delta), _event("error", error)]  # fmt: skip
        return await self._sse(request, events)

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        if self.mode.startswith("http"):
            status = "RESOURCE_EXHAUSTED" if self.mode == "http-429" else "INVALID_ARGUMENT"
            error = {"code": self._status(), "message": self.message, "status": status}
            return web.json_response({"error": error}, status=self._status())
        chunk = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"},
                                 "index": 0}]}  # fmt: skip
        error = {"error": {"code": 500, "message": self.message, "status": "INTERNAL"}}
        return await self._sse(request, [_data(chunk), _data(error)])


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\n".encode() + _data(payload)


@pytest.fixture
def upstream(loop_thread: LoopThread) -> Iterator[ScriptedUpstream]:
    server = loop_thread.run(ScriptedUpstream().start())
    yield server
    assert server.runner is not None
    loop_thread.run(server.runner.cleanup())


def _ask(gateway: Gateway, api: str, stream: bool) -> httpx.Response:
    key = gateway.create_key()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    messages = [{"role": "user", "content": "hi"}]
    body: dict[str, Any] = {"model": MODEL, "messages": messages, "stream": stream}
    path = "/chat/completions"
    if api == "anthropic":
        body["max_tokens"] = 50
        path = "/messages"
        headers["anthropic-version"] = "2023-06-01"
    return httpx.post(gateway.base_url + path, content=orjson.dumps(body), headers=headers,
                      timeout=60)  # fmt: skip


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_messages_are_redacted(
    gateway_factory: GatewayFactory, upstream: ScriptedUpstream, provider: str, mode: str, api: str
) -> None:
    upstream.mode = mode
    gateway = gateway_factory([upstream.channel(provider)])
    response = _ask(gateway, api, stream=mode.startswith("stream"))
    text = response.text
    if mode == "stream-mid":
        assert response.status_code == 200
        assert "Hi" in text, "the stream's content before the error was delivered"
    else:
        assert response.status_code >= 400
    leaked = [secret for secret in SECRETS if secret in text]
    assert leaked == [], f"{provider}/{mode}/{api} leaked {leaked}: {text}"
    assert USEFUL in text, "the message lost its useful part"


@pytest.mark.parametrize("stream", [False, True], ids=["http-400", "stream-first-event"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_key_at_the_length_cut_is_not_half_shown(
    gateway_factory: GatewayFactory, upstream: ScriptedUpstream, provider: str, stream: bool
) -> None:
    """Messages are cut to 500 characters; a key across the cut must not leave its start."""
    upstream.mode = "stream-first-event" if stream else "http-400"
    upstream.message = AT_THE_CUT
    gateway = gateway_factory([upstream.channel(provider)])
    text = _ask(gateway, "openai", stream=stream).text
    assert CHANNEL_KEY[:8] not in text, text
