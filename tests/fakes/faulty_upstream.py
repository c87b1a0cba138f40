"""A controllable fault-injection upstream speaking the OpenAI chat wire format.

One ``FaultyUpstream`` is one channel. ``fault`` picks what goes wrong and ``fail_rate`` how
often (seeded, so runs are repeatable); ``down()`` closes the listening socket so connections are
refused, ``up()`` reopens it on the same port. Every request is recorded with its
``x-request-id``; stream disconnects are timestamped so tests can check cancellation latency.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

__all__ = ["Fault", "FaultyUpstream", "Hit"]

Fault = Literal[
    "none",
    "status",  # HTTP ``status`` with an OpenAI error body (5xx by default)
    "rate_limit",  # 429 with Retry-After: ``retry_after`` seconds
    "auth",  # 401 invalid upstream key
    "billing",  # 429 insufficient_quota
    "slow_first_byte",  # headers only after ``delay_s``
    "stall",  # stream: two chunks, then silence
    "truncate",  # stream: two chunks, then the connection is cut (no [DONE])
    "malformed",  # 200 with a body that is not JSON
    "mixed",  # each failure picks one of ``mix`` at random
]

WORDS = ["one", " two", " three", " four", " five", " six"]
PROMPT_TOKENS = 9


@dataclass
class Hit:
    request_id: str | None
    stream: bool
    faulted: bool
    authorization: str | None
    at: float = field(default_factory=time.monotonic)


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-faulty",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _usage(completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    }


class FaultyUpstream:
    def __init__(self, name: str = "faulty", *, seed: int = 1) -> None:
        self.name = name
        self.fault: Fault = "none"
        self.fail_rate = 1.0
        self.status = 500
        self.retry_after = 1.0
        self.delay_s = 0.0
        self.chunk_delay_s = 0.0
        self.mix: list[Fault] = ["status", "rate_limit", "malformed", "slow_first_byte"]
        self.hits: list[Hit] = []
        self.disconnected_at: list[float] = []
        self.completed_streams = 0
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._released = asyncio.Event()  # set at stop(): stalled handlers return at once
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def set(self, fault: Fault, fail_rate: float = 1.0, **options: Any) -> FaultyUpstream:
        self.fault, self.fail_rate = fault, fail_rate
        for name, value in options.items():
            if not hasattr(self, name):
                raise AttributeError(name)
            setattr(self, name, value)
        return self

    async def start(self) -> FaultyUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.up()
        return self

    async def up(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        self.port = self._site.port

    async def down(self) -> None:
        """Stop listening: new connections are refused (kept-alive ones are closed too)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._released.wait(), seconds)
        except TimeoutError:
            pass

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _faulted(self) -> bool:
        return self.fault != "none" and self._rng.random() < self.fail_rate

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        stream = bool(body.get("stream"))
        faulted = self._faulted()
        self.hits.append(
            Hit(request.headers.get("x-request-id"), stream, faulted,
                request.headers.get("authorization"))
        )  # fmt: skip
        fault = self.fault if faulted else "none"
        if fault == "mixed":
            fault = self._rng.choice(self.mix)
        early = await self._early_fault(fault)
        if early is not None:
            return early
        model = str(body.get("model", "m"))
        if stream:
            return await self._stream(request, body, model, fault)
        payload = {
            "id": "chatcmpl-faulty",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(len(WORDS)),
        }  # fmt: skip
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _early_fault(self, fault: Fault) -> web.StreamResponse | None:
        def error(
            status: int, message: str, code: str | None = None, **headers: str
        ) -> web.Response:
            body = {"error": {"message": message, "type": "server_error", "code": code}}
            return web.Response(status=status, body=orjson.dumps(body), headers=headers,
                                content_type="application/json")  # fmt: skip

        if fault == "status":
            return error(self.status, "upstream exploded")
        if fault == "rate_limit":
            return error(429, "slow down", "rate_limit_exceeded", **{
                "retry-after": str(self.retry_after)})  # fmt: skip
        if fault == "auth":
            return error(401, "Incorrect API key provided: sk-upst****", "invalid_api_key")
        if fault == "billing":
            return error(429, "You exceeded your current quota", "insufficient_quota")
        if fault == "malformed":
            return web.Response(status=200, body=b'{"choices": [', content_type="application/json")
        if fault == "slow_first_byte":
            await self._sleep(self.delay_s)
        return None

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, fault: Fault
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        try:
            await response.prepare(request)
            await response.write(_chunk(model, {"role": "assistant", "content": ""}))
            for index, word in enumerate(WORDS):
                if self.chunk_delay_s:
                    await self._sleep(self.chunk_delay_s)
                await response.write(_chunk(model, {"content": word}))
                if index == 1 and fault == "stall":
                    await self._sleep(3600)
                    return response
                if index == 1 and fault == "truncate":
                    assert request.transport is not None
                    request.transport.close()  # cut mid-stream, no [DONE]
                    return response
            await response.write(_chunk(model, {}, "stop"))
            if include_usage:
                usage = {
                    "id": "chatcmpl-faulty",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": _usage(len(WORDS)),
                }
                await response.write(b"data: " + orjson.dumps(usage) + b"\n\n")  # fmt: skip
            await response.write(b"data: [DONE]\n\n")
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            # The gateway dropped the connection (client left, or it timed us out).
            self.disconnected_at.append(time.monotonic())
            raise
        return response
